"""The run report: collect what a job left behind (stage manifests, URL and document tables, dedup clusters,
the token index, training metrics, sample generations) and render one self-contained `report.html`.

Self-contained means no external assets or scripts: plots are matplotlib PNGs inlined as base64, all text goes
through `html.escape`. Each section is one small function taking collected data; a section whose data is absent
is replaced by a one-line note saying what was missing, never an error.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline.layout import CLUSTERS, MANIFEST, STAGES
from pipeline.shards import INDEX_NAME
from pipeline.storage import Dir, join
from training.metrics import ANSWERS_FILE, METRICS_FILE, read_metrics

TOP_N = 15
ANSWERS_SHOWN, MISSES_SHOWN = 8, 3  # held-out questions in the report: the first, then later wrong answers


@dataclass
class Section:
    title: str
    body: str | None  # HTML; None: the data was absent
    note: str = ""  # why it is absent


@dataclass
class RunInputs:
    """What a report is made of; every field may be empty."""

    corpus: Dir | None = None
    runs: dict[str, str | Path] = field(default_factory=dict)  # label -> run dir (path or URI) with metrics.jsonl
    samples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the job itself found and said, shown first


# -- collect ------------------------------------------------------------------------------------------------
def stage_manifests(corpus: Dir) -> dict[str, dict]:
    """Manifest of each corpus stage present under `corpus`, in pipeline order."""
    manifests = {}
    for name in STAGES:
        if corpus.exists(f"{name}/{MANIFEST}"):
            manifests[name] = corpus.read_json(f"{name}/{MANIFEST}")
    return manifests


def _parts(corpus: Dir, stage: str) -> list[str]:
    return [name for name in corpus.list(stage, "part-*.parquet")]


def read_column(corpus: Dir, stage: str, column: str) -> list | None:
    """One column over all of a stage's Parquet parts; None when the stage or the column is absent."""
    parts = _parts(corpus, stage)
    if not parts:
        return None
    values = []
    for name in parts:
        schema = pq.read_schema(corpus.path(name), filesystem=corpus.fs)
        if column not in schema.names:
            return None
        values.extend(pq.read_table(corpus.path(name), columns=[column], filesystem=corpus.fs)
                      .column(column).to_pylist())
    return values


def top_counts(values: list, n: int = TOP_N) -> list[tuple[str, int]]:
    """Most common values, ties by name; list-valued entries (subreddits) count each member once."""
    counts: Counter = Counter()
    for value in values:
        if isinstance(value, list):
            counts.update(set(v for v in value if v is not None))
        elif value is not None:
            counts[value] += 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def cluster_sizes(corpus: Dir) -> dict[int, int] | None:
    """Number of duplicate clusters of each size (a cluster of k documents keeps 1 and rejects k - 1)."""
    if not corpus.exists(f"dedup/{CLUSTERS}"):
        return None
    table = corpus.read_parquet(f"dedup/{CLUSTERS}")
    sizes = Counter(table.column("cluster_size").to_pylist()[i] for i, keeper in
                    enumerate(table.column("keeper").to_pylist()) if keeper)
    return dict(sorted(sizes.items()))


def token_index(corpus: Dir) -> dict | None:
    if not corpus.exists(f"tokenize/{INDEX_NAME}"):
        return None
    return corpus.read_json(f"tokenize/{INDEX_NAME}")


def run_metrics(run_dir: str | Path) -> list[dict] | None:
    """The metrics.jsonl records of a training run directory (a path or URI); None when it has none."""
    if not Dir(str(run_dir)).exists(METRICS_FILE):
        return None
    return read_metrics(join(str(run_dir), METRICS_FILE))


def run_answers(run_dir: str | Path) -> list[dict] | None:
    """A fine-tuning run's scored held-out questions (`exact_match.jsonl`); None when it has none."""
    run = Dir(str(run_dir))
    if not run.exists(ANSWERS_FILE):
        return None
    return [json.loads(line) for line in run.read_bytes(ANSWERS_FILE).decode("utf-8").splitlines() if line]


# -- render helpers -----------------------------------------------------------------------------------------
def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return esc(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return esc(value)


def table(header: list[str], rows: list[list[Any]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td class=\"{'num' if i >= numeric_from else ''}\">{fmt(v)}</td>"
                         for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def png(fig) -> str:
    """A matplotlib figure as an inline <img> (base64 PNG); closes the figure."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def figure(width: float = 7, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


# -- sections -----------------------------------------------------------------------------------------------
def summary_section(manifests: dict[str, dict]) -> Section:
    if not manifests:
        return Section("Summary", None, "no stage manifests found")
    rows = []
    for name, manifest in manifests.items():
        funnel = manifest["funnel"]
        rejected = sum(v for k, v in funnel.items() if k.startswith("rejected:"))
        rows.append([name, funnel.get("in", 0), funnel.get("out", 0), rejected, manifest.get("elapsed_s", 0.0),
                     manifest.get("finished_at", "")])
    return Section("Summary", table(["stage", "in", "out", "rejected", "seconds", "finished"], rows, 1))


def funnel_section(manifests: dict[str, dict]) -> Section:
    if not manifests:
        return Section("Funnel", None, "no stage manifests found")
    blocks = []
    for name, manifest in manifests.items():
        funnel = manifest["funnel"]
        n_in = funnel.get("in", 0) or 1
        order = sorted(funnel, key=lambda k: (k not in ("in", "out"), k != "in", not k.startswith("rejected:"), k))
        rows = [[key, funnel[key], f"{100 * funnel[key] / n_in:.2f}%"] for key in order]
        blocks.append(f"<div class=\"col\"><h3>{esc(name)}</h3>"
                      + table(["counter", "records", "share of in"], rows) + "</div>")
    return Section("Funnel per stage, with reject reasons", "<div class=\"cols\">" + "".join(blocks) + "</div>")


DOCUMENT_STAGES = (("dedup", "deduplicated documents"), ("filter", "filtered documents"),
                   ("extract", "extracted documents"))


def last_document_stage(corpus: Dir) -> tuple[str, str] | None:
    """(stage, label) of the furthest document stage with output under `corpus`: a single-stage run has one."""
    return next(((stage, label) for stage, label in DOCUMENT_STAGES if _parts(corpus, stage)), None)


def hosts_section(corpus: Dir) -> Section:
    blocks = []
    sources = [("urls", "URL table")]
    if (documents := last_document_stage(corpus)) is not None:
        sources.append(documents)
    for column, noun in (("host", "host"), ("subreddits", "subreddit")):
        for stage, label in sources:
            values = read_column(corpus, stage, column)
            if values is not None:
                blocks.append(f"<div class=\"col\"><h3>Top {noun}s: {esc(label)}</h3>"
                              + table([noun, "count"], top_counts(values)) + "</div>")
    if not blocks:
        return Section("Hosts and subreddits", None, "no URL table or documents found")
    return Section("Hosts and subreddits", "<div class=\"cols\">" + "".join(blocks) + "</div>")


def lengths_section(corpus: Dir) -> Section:
    stage, label = last_document_stage(corpus) or ("dedup", "deduplicated documents")
    column, lengths = "n_words", read_column(corpus, stage, "n_words")
    if lengths is None:
        column, lengths = "n_chars", read_column(corpus, stage, "n_chars")
    lengths = [n for n in (lengths or []) if n is not None]
    if not lengths:
        return Section("Document lengths", None, "no documents (extract, filter or dedup output) with n_words or "
                                                 "n_chars")
    import numpy as np

    values = np.array(lengths)
    fig, ax = figure()
    ax.hist(values, bins=min(50, max(5, len(values) // 4)), color="#4a7ab5")
    ax.set_xlabel(column.replace("n_", "") + " per document")
    ax.set_ylabel("documents")
    ax.grid(alpha=0.3)
    stats = [["documents", len(values)], ["min", int(values.min())], ["median", float(np.median(values))],
             ["mean", float(values.mean())], ["max", int(values.max())], [f"total {column}", int(values.sum())]]
    return Section(f"Document lengths ({label})", png(fig) + table(["statistic", column], stats))


def duplicates_section(sizes: dict[int, int] | None) -> Section:
    if sizes is None:
        return Section("Duplicate clusters", None, f"no dedup/{CLUSTERS} found")
    if not sizes:
        return Section("Duplicate clusters", "<p>No duplicate clusters: every document was unique.</p>")
    rows = [[size, count, (size - 1) * count] for size, count in sizes.items()]
    rows.append(["all", sum(sizes.values()), sum((s - 1) * c for s, c in sizes.items())])
    fig, ax = figure(7, 2.8)
    ax.bar([str(s) for s in sizes], list(sizes.values()), color="#b5654a")
    ax.set_xlabel("cluster size (documents)")
    ax.set_ylabel("clusters")
    ax.grid(alpha=0.3, axis="y")
    return Section("Duplicate clusters", png(fig) + table(["cluster size", "clusters", "documents dropped"], rows))


def tokens_section(index: dict | None) -> Section:
    if index is None:
        return Section("Tokens", None, f"no tokenize/{INDEX_NAME} found")
    rows = [[split, info.get("tokens", 0), info.get("docs", 0), len(info.get("shards", []))]
            for split, info in index.get("splits", {}).items()]
    tokenizer = index.get("tokenizer", {})
    facts = [[key, tokenizer[key]] for key in sorted(tokenizer) if not isinstance(tokenizer[key], (dict, list))]
    return Section("Tokens", table(["split", "tokens", "documents", "shards"], rows)
                   + "<h3>Tokenizer</h3>" + table(["field", "value"], facts, numeric_from=2))


def training_section(label: str, metrics: list[dict] | None) -> Section:
    title = f"Training: {label}"
    if not metrics:
        return Section(title, None, "no metrics.jsonl in the run directory")
    train = [(r["step"], r["loss"]) for r in metrics if isinstance(r.get("loss"), float)]
    val = [(r["step"], r["val_loss"]) for r in metrics if isinstance(r.get("val_loss"), float)]
    speed = [(r["step"], r["tokens_per_s"]) for r in metrics if isinstance(r.get("tokens_per_s"), (int, float))]
    parts = []
    if train or val:
        fig, ax = figure()
        if train:
            ax.plot(*zip(*train), label="train loss", linewidth=1)
        if val:
            ax.plot(*zip(*val), "o-", label="validation loss")
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend()
        parts.append(png(fig))
    if speed:
        fig, ax = figure(7, 2.4)
        ax.plot(*zip(*speed), color="#5a9a4a")
        ax.set_xlabel("step")
        ax.set_ylabel("tokens/s")
        ax.grid(alpha=0.3)
        parts.append(png(fig))
    last: dict[str, Any] = {}
    for record in metrics:
        last.update(record)
    rows = [[key, last[key]] for key in sorted(last)]
    parts.append("<h3>Last logged values</h3>" + table(["metric", "value"], rows))
    if speed:
        values = [v for _, v in speed]
        parts.append(f"<p>Mean throughput {fmt(sum(values) / len(values))} tokens/s over {len(values)} logged "
                     f"intervals.</p>")
    return Section(title, "".join(parts))


def answers_section(label: str, answers: list[dict]) -> Section:
    """The first held-out questions with the model's greedy answer beside the reference, and a few of the later
    ones it got wrong."""
    hits = sum(a["exact"] for a in answers)
    misses = [a for a in answers[ANSWERS_SHOWN:] if not a["exact"]][:MISSES_SHOWN]
    rows = [[a["question"], a["answer"], a["reference"], "yes" if a["exact"] else "no"]
            for a in answers[:ANSWERS_SHOWN] + misses]
    return Section(f"Held-out questions: {label}",
                   f"<p>{hits} of {len(answers)} answered exactly (greedy decoding, questions not trained on); "
                   f"the first {min(len(answers), ANSWERS_SHOWN)}" + (f" and {len(misses)} later misses" if misses
                                                                       else "") + ":</p>"
                   + table(["question", "model's answer", "reference", "exact"], rows, numeric_from=4))


def samples_section(samples: list[str]) -> Section:
    if not samples:
        return Section("Sample generations", None, "no samples were passed in")
    items = "".join(f"<li><pre>{esc(s)}</pre></li>" for s in samples)
    return Section("Sample generations", f"<ol>{items}</ol>")


# -- assemble -----------------------------------------------------------------------------------------------
STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}h3{font-size:1.05em}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}th,td{border:1px solid #ddd;padding:3px 8px}
th{background:#f2f2f2;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
p.absent{color:#777;font-style:italic}img{max-width:100%}pre{white-space:pre-wrap;margin:0}
.cols{display:flex;flex-wrap:wrap;gap:0 24px}.col{flex:0 1 auto;min-width:200px}
"""


def notes_section(notes: list[str]) -> Section:
    return Section("What the job said", "<ul>" + "".join(f"<li>{esc(note)}</li>" for note in notes) + "</ul>")


def sections(inputs: RunInputs) -> list[Section]:
    found: list[Section] = [notes_section(inputs.notes)] if inputs.notes else []
    if inputs.corpus is not None:
        manifests = stage_manifests(inputs.corpus)
        found += [summary_section(manifests), funnel_section(manifests), hosts_section(inputs.corpus),
                  lengths_section(inputs.corpus), duplicates_section(cluster_sizes(inputs.corpus)),
                  tokens_section(token_index(inputs.corpus))]
    for label, run_dir in inputs.runs.items():
        found.append(training_section(label, run_metrics(run_dir)))
        if answers := run_answers(run_dir):
            found.append(answers_section(label, answers))
    if inputs.runs or inputs.samples:
        found.append(samples_section(inputs.samples))
    return found


def render(title: str, found: list[Section]) -> str:
    body = []
    for section in found:
        if section.body is None:
            body.append(f"<h2>{esc(section.title)}</h2><p class=\"absent\">Omitted: {esc(section.note)}.</p>")
        else:
            body.append(f"<h2>{esc(section.title)}</h2>{section.body}")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>{''.join(body)}</body></html>\n")


def write_report(out: str, runs: dict[str, str | Path] | None = None, samples: list[str] | None = None,
                 title: str = "webtext run report", corpus: bool = True, notes: list[str] | None = None) -> str:
    """Render the report of the job whose output is `out` and write it to `<out>/report.html`; returns its URI."""
    out_dir = Dir(str(out))
    inputs = RunInputs(corpus=out_dir if corpus else None, runs=dict(runs or {}), samples=list(samples or []),
                       notes=list(notes or []))
    out_dir.write_bytes("report.html", render(title, sections(inputs)).encode("utf-8"))
    return out_dir.uri("report.html")


def report_json_summary(out: str) -> dict:
    """The numbers of the corpus sections, as plain data (what the HTML shows, for scripts and tests)."""
    corpus = Dir(str(out))
    return {"funnels": {k: m["funnel"] for k, m in stage_manifests(corpus).items()},
            "clusters": cluster_sizes(corpus), "tokens": token_index(corpus)}


if __name__ == "__main__":  # python -m jobs.report OUT: (re)write OUT/report.html from what is there
    import sys

    root = Path(sys.argv[1])
    found_runs = {name: root / name for name in ("pretrain", "finetune") if (root / name / METRICS_FILE).is_file()}
    print(write_report(str(root), found_runs))
    print(json.dumps(report_json_summary(str(root)), default=str)[:2000])
