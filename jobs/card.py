"""`webtext card OUT`: the corpus's dataset card, `OUT/README.md` in the Hugging Face format, from the stage manifests under an output root.

YAML front matter with the Hub's fields that apply (license notes, languages, size category, task categories, and
`configs` whose `data_files` point at the documents' Parquet parts, so `datasets.load_dataset(OUT)` and the Hub load
them as they are), then the description, the recipe and config each stage ran with, the funnel, languages, sizes
and the terms of the third-party pages the documents come from. Everything is read from what the stages wrote.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import yaml

from jobs.cli import UserError, module_main
from jobs.report import last_document_stage, read_column, stage_manifests, token_index
from pipeline.storage import Dir

# The Hub's size categories: (upper bound, label), by number of documents.
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
                   (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T")]
LICENSE_NOTE = (
    "The documents are the main text of third-party web pages, each under its own author's copyright and terms; "
    "webtext does not license them. The corpus is meant for research on language models, as WebText and "
    "OpenWebText were. Each document keeps its `url` so that a page can be traced and removed on request.")


class CardError(ValueError):
    """An output root without the manifests a card is written from."""


def size_category(n: int) -> str:
    return next((label for bound, label in SIZE_CATEGORIES if n < bound), "n>1T")


def front_matter(name: str, documents_stage: str, n_documents: int, languages: list[str]) -> dict:
    return {
        "pretty_name": name,
        "license": "other",
        "license_name": "third-party-web-pages",
        "language": languages,
        "multilinguality": "multilingual" if len(languages) > 1 else "monolingual",
        "size_categories": [size_category(n_documents)],
        "task_categories": ["text-generation"],
        "task_ids": ["language-modeling"],
        "source_datasets": ["original"],
        "annotations_creators": ["no-annotation"],
        "language_creators": ["found"],
        "tags": ["webtext", "reddit", "web-crawl"],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": "train", "path": f"{documents_stage}/part-*.parquet"}]}],
    }


def dataset_card(out: str, name: str | None = None) -> str:
    """The card's text for the corpus under `out` (a path or URI)."""
    corpus = Dir(out)
    manifests = stage_manifests(corpus)
    found = last_document_stage(corpus)
    if found is None or found[0] not in manifests:
        raise CardError(f"{out}: no finished document stage (extract, filter or dedup with a _manifest.json): "
                        "build the corpus first")
    stage = found[0]
    n_documents = manifests[stage]["funnel"]["out"]
    languages = Counter(read_column(corpus, stage, "lang") or [])
    name = name or f"webtext corpus ({out.split('?', 1)[0].rstrip('/').rsplit('/', 1)[-1]})"
    meta = front_matter(name, stage, n_documents, sorted(lang for lang in languages if lang) or ["en"])
    body = [
        f"# {name}",
        "",
        _description(manifests, stage, n_documents),
        "",
        "## Loading",
        "",
        "```python",
        "import datasets, ray",
        f'docs = datasets.load_dataset("parquet", data_files="{stage}/part-*.parquet", split="train")',
        f'docs = ray.data.read_parquet("{stage}/")  # part files only: _rejected/ and the rest are skipped',
        "```",
        "",
        "## License and terms",
        "",
        LICENSE_NOTE,
        "",
        "## Recipe",
        "",
        _recipe(manifests),
        "## Funnel",
        "",
        _funnel(manifests),
        "",
        "## Languages",
        "",
        _counts_table("language", languages, n_documents),
        "",
        "## Sizes",
        "",
        _sizes(corpus, manifests, stage),
        "",
    ]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(body)


def _description(manifests: dict[str, dict], stage: str, n_documents: int) -> str:
    karma = manifests.get("urls", {}).get("config", {})
    rule = (f"submissions with at least {karma['min_karma']} karma ({karma.get('karma_rule', 'max')} rule)"
            if "min_karma" in karma else "Reddit submissions")
    return (f"A WebText-style corpus of {n_documents:,} web documents, built with "
            f"[webtext](https://github.com/webtext/webtext) the way OpenAI built WebText for GPT-2: the outbound links "
            f"of {rule}, crawled politely (robots.txt honoured), main text extracted, filtered by language, length "
            f"and quality, and stripped of exact and near duplicates. The stages found here: "
            f"{', '.join(manifests)}. The documents are the `{stage}` stage's Parquet parts; every document removed "
            "on the way is kept beside its stage with the reason (`<stage>/_rejected/`).")


def _recipe(manifests: dict[str, dict]) -> str:
    """Each stage: when and by which code version it ran, its input files (names only), its whole config."""
    lines = ["Each stage's config below is its section of `webtext build-corpus --config` (all keys, as run).", ""]
    for name, manifest in manifests.items():
        inputs = manifest.get("inputs", [])
        shown = sorted({i["uri"].split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] for i in inputs})
        listed = ", ".join(shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")
        lines += [f"### {name}", "",
                  f"Stage version {manifest.get('version')}, webtext {manifest.get('code_version')}, finished "
                  f"{manifest.get('finished_at')}; {len(inputs)} input file(s): {listed}.", "",
                  "```yaml", yaml.safe_dump(manifest.get("config", {}), sort_keys=True).rstrip(), "```", ""]
    return "\n".join(lines)


def _funnel(manifests: dict[str, dict]) -> str:
    rows = ["| stage | records in | out | removed, by reason |", "|---|---:|---:|---|"]
    for name, manifest in manifests.items():
        funnel = manifest["funnel"]
        removed = ", ".join(f"{k.split(':', 1)[1]} {v:,}" for k, v in funnel.items() if k.startswith("rejected:"))
        rows.append(f"| {name} | {funnel.get('in', 0):,} | {funnel.get('out', 0):,} | {removed or '-'} |")
    return "\n".join(rows)


def _counts_table(label: str, counts: Counter, total: int) -> str:
    if not counts:
        return "No `lang` column in the documents."
    rows = [f"| {label} | documents | share |", "|---|---:|---:|"]
    for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))):
        rows.append(f"| {key} | {n:,} | {100 * n / max(total, 1):.1f}% |")
    return "\n".join(rows)


def _sizes(corpus: Dir, manifests: dict[str, dict], stage: str) -> str:
    parts = manifests[stage].get("parts", [])
    chars = sum(v or 0 for v in read_column(corpus, stage, "n_chars") or [])
    words = sum(v or 0 for v in read_column(corpus, stage, "n_words") or [])
    rows = ["| measure | value |", "|---|---:|",
            f"| documents | {manifests[stage]['funnel']['out']:,} |",
            f"| characters | {chars:,} |", f"| words | {words:,} |",
            f"| Parquet parts | {len(parts)} ({sum(p.get('bytes', 0) for p in parts):,} bytes, zstd) |"]
    index = token_index(corpus)
    if index is not None:
        for split, info in index.get("splits", {}).items():
            rows.append(f"| GPT-2 tokens, {split} split | {info.get('tokens', 0):,} in {info.get('docs', 0):,} "
                        f"documents |")
    return "\n".join(rows)


CARD = "README.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="the corpus's output root (path or URI)")
    parser.add_argument("--name", help="the dataset's name in the card (default: webtext corpus (<OUT's name>))")


def run(args: argparse.Namespace) -> int:
    try:
        text = dataset_card(args.out, args.name)
    except CardError as err:
        raise UserError(str(err)) from None
    Dir(args.out).write_bytes(CARD, text.encode())
    print(f"card: {Dir(args.out).uri(CARD).split('?', 1)[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.card"))
