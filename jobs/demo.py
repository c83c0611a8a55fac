"""`make demo` / `webtext demo`: the main job end to end at small scale on one machine, all on loopback.

1. start the local web (`jobs.fixtures.localweb`): generated sites with articles, robots.txt and faults, on 127.0.0.1;
2. write a Pushshift-format dump that links to it, with karma spread, URL variants, reposts, self posts, NSFW and
   media links planted (`jobs.fixtures.dumpgen.submissions_for_web`), so the right URL table is known;
3. build the corpus (`jobs.build_corpus`: urls -> crawl -> extract -> filter -> dedup -> tokenize) on an embedded
   Ray, crawling the local web through the crawler's resolve override;
   some dead pages of the local web are in local archives (`jobs.fixtures.archivegen`: a pywb Wayback and a Common Crawl
   columnar index + WARC in a local S3), and the crawl (`source: live+archive`) recovers them;
4. check the funnel against the planted truth and say so (recovered and lost pages, and the capture chosen);
5. pretrain the `tiny` GPT with DeepSpeed ZeRO-2 on 2 Ray Train workers on the shards (`--steps 0` skips 5-7);
6. fine-tune it on a small QA and dialogue set generated from the crawled pages (asked for a page's title, read
   from its opening), and score it on questions about a fifth of the pages that fine-tuning never saw;
7. sample a completion from the pretrained model and a chat turn from the fine-tuned one.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from jobs.fixtures.archivegen import plant, with_truth
from jobs.build_corpus import CorpusConfig, build_corpus
from jobs.cli import module_main
from jobs.common import add_run_arguments, run_options
from jobs.console import console
from jobs.fixtures.dumpgen import submissions_for_web, write_dump
from jobs.fixtures.localweb import LocalWeb
from jobs.report import write_report
from pipeline.tokenizer import GPT2_N_VOCAB
from pipeline.urlnorm import normalize_url

REPO = Path(__file__).resolve().parents[1]
SEQ_LEN = 128  # of the demo's pretraining and fine-tuning
HELD_OUT = 0.2  # of the fine-tuning pages: only asked, never trained on
PASSAGE_WORDS, PASSAGES, CONTEXT_CHARS = 8, (0, 8, 16), 200  # a fine-tuning question quotes 8 words at one of
# three offsets of its page's body; its context is the first 200 characters
FINETUNE_LR = 3e-3
PLANTED = ("article", "near_duplicate", "stub", "foreign")  # page kinds with text for the corpus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", help="output directory (default: out/demo)")
    parser.add_argument("--hosts", type=int, default=24, help="sites on the local web")
    parser.add_argument("--pages", type=int, default=12, help="articles per site")
    parser.add_argument("--steps", type=int, default=150, help="pretraining steps (0: no training at all)")
    parser.add_argument("--finetune-steps", type=int, default=600, help="fine-tuning steps")
    parser.add_argument("--model", default="tiny", help="model size for pretraining: tiny, gpt2, gpt2-medium, ...")
    parser.add_argument("--seed", type=int, default=0)
    add_run_arguments(parser)


def demo_config(web: LocalWeb) -> CorpusConfig:
    """Defaults, except what a local web on a 2-core machine asks for: its address, short timeouts."""
    config = CorpusConfig()
    config.crawl = config.crawl.model_copy(update={
        "resolve": web.resolve(), "allow_networks": ["127.0.0.1/32"], "min_delay_s": 0.05, "connect_timeout_s": 2.0,
        "read_timeout_s": 2.0, "total_timeout_s": 5.0, "max_attempts": 2, "backoff_base_s": 0.1,
        "backoff_max_s": 0.5, "max_retry_after_s": 2.0,
    })
    # A few hundred documents or fewer: a 0.5 % validation split would come out empty, and validation needs one
    # global batch of windows (16 x 129 tokens). Aim at about sixteen documents.
    n_articles = sum(page.kind == "article" for page in web.pages())
    config.tokenize = config.tokenize.model_copy(update={"val_fraction": min(0.3, max(0.05, 16 / n_articles))})
    return config


def rows(stage_dir: Path, pattern: str = "part-*.parquet", columns: list[str] | None = None) -> list[dict]:
    return [r for p in sorted(stage_dir.glob(pattern)) for r in pq.read_table(p, columns=columns).to_pylist()]


def check_archives(log: list[dict], truth: dict[str, list | None]) -> list[str]:
    """Every dead page with an archived copy recovered from the planted archive with the planted capture; every
    other URL live when ok, lost when not."""
    wrong = []
    for r in log:
        planted = truth.get(r["url_norm"])
        want = ("archive", *planted) if planted else ("live" if r["outcome"] == "ok" else "lost", None, None)
        capture = int(r["capture_time"].timestamp()) if r["capture_time"] else None
        if (r["source"], r["archive"], capture) != want:
            wrong.append((r["url"], r["source"], r["archive"], capture, want))
    return [f"crawl: {len(wrong)} URLs' sources or captures differ from the planted ones, e.g. {wrong[:3]}"] if wrong else []


def check_against_truth(out: Path, expected_urls: set[str], web_pages, archived: dict[str, list | None]) -> list[str]:
    """Problems found comparing each stage's output with what was planted: the URL table, every crawl outcome, which
    dead pages were recovered from which archive with which capture (`archived`, jobs/fixtures/archivegen.py), which pages
    became documents, what the filter dropped and why, and that dedup kept exactly one page of each family
    of duplicates (an article, its redirects and retried copies, its syndicated near duplicate)."""
    problems = []
    web_pages = with_truth(web_pages, archived)
    got = {r["url_norm"] for r in rows(out / "urls", columns=["url_norm"])}
    expected_urls = {normalize_url(url) for url in expected_urls}
    if got != expected_urls:
        problems.append(f"urls: {len(got ^ expected_urls)} URLs differ from the planted truth")
    page_of = {normalize_url(page.url): page for page in web_pages}
    log = rows(out / "crawl", columns=["url", "url_norm", "outcome", "source", "archive", "capture_time"])
    planted = {r["url_norm"]: getattr(page_of.get(r["url_norm"]), "expected", "not planted") for r in log}
    wrong = [(r["url"], r["outcome"], planted[r["url_norm"]]) for r in log if r["outcome"] != planted[r["url_norm"]]]
    if wrong:
        problems.append(f"crawl: {len(wrong)} outcomes differ from the planted ones, e.g. {wrong[:3]}")
        return problems  # the stages after the crawl are checked against pages the crawl got right
    if wrong_sources := check_archives(log, archived):
        return problems + wrong_sources
    crawled_with_text = {r["url_norm"] for r in log if r["outcome"] == "ok" and page_of[r["url_norm"]].family}

    def documents(stage: str) -> set[str]:
        return {normalize_url(r["url"]) for r in rows(out / stage, columns=["url"])}

    extracted = documents("extract")
    if extracted != crawled_with_text:
        problems.append(f"extract: {len(extracted ^ crawled_with_text)} pages differ from the crawled articles, "
                        f"e.g. {sorted(extracted ^ crawled_with_text)[:3]}")
        return problems
    filtered = {normalize_url(r["url"]): r["reason"]
                for r in rows(out / "filter", "_rejected/*.parquet", ["url", "reason"])}
    expected_filtered = {url: page_of[url].expected_filter for url in extracted if page_of[url].expected_filter}
    if filtered != expected_filtered:
        differ = sorted(set(filtered.items()) ^ set(expected_filtered.items()))
        problems.append(f"filter: {len(differ)} drops differ from the planted ones, e.g. {differ[:3]}")
    families = {page_of[url].family for url in extracted - set(filtered)}
    survivors = Counter(page_of[url].family for url in documents("dedup"))
    if survivors != Counter(families):
        problems.append(f"dedup: kept {sum(survivors.values())} documents of {len(survivors)} families; "
                        f"planted {len(families)} families among {len(extracted) - len(filtered)} documents")
    return problems


def pretrain(out: Path, steps: int, seed: int, model: str = "tiny") -> dict:
    from pipeline.config import load_config
    from pipeline.shards import read_index
    from training.config import TrainConfig
    from training.launch import launch

    out = out.resolve()  # Ray Train workers do not run in this directory
    tokens = out / "tokenize"
    # Validation needs one global batch of windows (2 ranks x micro batch): a small demo corpus may hold fewer
    # than the config's 16 validation windows, so the micro batch shrinks to fit.
    val_windows = read_index(tokens)[0]["splits"]["val"]["tokens"] // (SEQ_LEN + 1)
    micro = max(1, min(8, val_windows // 2))
    cfg = load_config(TrainConfig, REPO / "configs" / "pretrain_tiny.yaml", [
        f"out_dir={out / 'pretrain'}", f"max_steps={steps}", f"seed={seed}",
        f"data.train=['{tokens}/part-train-*.bin']", f"data.val=['{tokens}/part-val-*.bin']",
        "zero.stage=2", "launch.num_workers=2", f"checkpoint.every={steps}", f"eval.every={max(steps // 2, 1)}",
        f"optim.warmup_steps={max(steps // 5, 1)}",
        f"batch.seq_len={SEQ_LEN}", f"model.block_size={SEQ_LEN}", f"model.size={model}",
        f"batch.micro_batch_size={micro}", f"batch.global_batch_size={2 * micro}",
    ])
    with console().training("pretrain", cfg.out_dir, steps):
        return launch(cfg)


def unigram_baseline(tokens: Path) -> float:
    """Validation cross-entropy (nats per token) of the train split's token frequencies: what a model that ignores
    context scores. A pretrained model below it has learned something of the order of words."""
    import numpy as np

    from pipeline.shards import read_shard

    def split(name: str) -> np.ndarray:
        return np.concatenate([read_shard(p) for p in sorted(tokens.glob(f"part-{name}-*.bin"))])

    counts = np.bincount(split("train"), minlength=GPT2_N_VOCAB) + 0.01  # unseen tokens keep a little mass
    return float(-np.log(counts / counts.sum())[split("val")].mean())


def write_finetune_data(out: Path, seed: int) -> tuple[list[Path], Path]:
    """QA and dialogue JSONL from the deduplicated documents, and a held-out QA file: questions about pages the
    model never saw in fine-tuning, so a right answer is read from its context, not remembered.

    A question names a page by its host and a passage of its body and asks for its title; the context is the
    page's title line and opening (reading comprehension: find the answer in the text). A fifth of the pages,
    chosen by `seed`, are held out: they are only asked about, by their opening words. Each other page gives
    three examples, a question apiece about a different passage: two QA, one dialogue."""
    docs = [r for p in sorted((out / "dedup").glob("part-*.parquet"))
            for r in pq.read_table(p, columns=["host", "title", "text"]).to_pylist() if r["title"]]
    random.Random(seed).shuffle(docs)
    held = max(1, round(len(docs) * HELD_OUT))
    qa = [page_question(doc, at) for doc in docs[held:] for at in PASSAGES[:2]]
    chat = [{"messages": [{"role": "system", "content": "You name articles."},
                          {"role": "user", "content": f"{row['context']}\n\n{row['question']}"},
                          {"role": "assistant", "content": row["answer"]}]}
            for row in (page_question(doc, PASSAGES[2]) for doc in docs[held:])]
    files = []
    for name, rows in (("qa.jsonl", qa), ("chat.jsonl", chat),
                       ("held_out.jsonl", [page_question(doc, 0) for doc in docs[:held]])):
        path = out / "finetune_data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        files.append(path)
    return files[:2], files[2]


def page_question(doc: dict, at: int) -> dict:
    """A QA example about one document: its title, asked by its host and the words of its body from word `at` on,
    with the page's title line and opening as context (extraction puts the title first; where not, it is added)."""
    first, _, rest = doc["text"].partition("\n")
    body = rest if first.strip() == doc["title"].strip() and rest.strip() else doc["text"]
    passage = " ".join(body.split()[at:at + PASSAGE_WORDS])
    where = "begins" if at == 0 else "says"
    return {"question": f"What is the title of the article on {doc['host']} that {where}: {passage}?",
            "context": f"{doc['title']}\n{body}"[:max(CONTEXT_CHARS, len(doc["title"]) + 1)], "answer": doc["title"]}


def finetune_and_sample(out: Path, steps: int, seed: int) -> tuple[dict, list[str]]:
    from pipeline.config import load_config
    from pipeline.tokenizer import gpt2_encoding
    from training.finetune import FinetuneConfig, finetune
    from training.generate import Sampling, chat_reply, generate_text, load_model

    out = out.resolve()
    shutil.rmtree(out / "finetune", ignore_errors=True)  # a run of an earlier demo: other pages, other data
    train_files, held_out = write_finetune_data(out, seed)
    cfg = load_config(FinetuneConfig, REPO / "configs" / "finetune_tiny.yaml", [
        f"out_dir={out / 'finetune'}", f"max_steps={steps}", f"seed={seed}", "zero.stage=2",
        f"checkpoint.every={steps}", f"eval.every={steps}", f"batch.seq_len={SEQ_LEN}",
        f"finetune.val_data=['{held_out}']", "finetune.exact_match_examples=1000",
        f"optim.lr={FINETUNE_LR}", f"optim.warmup_steps={max(steps // 10, 1)}",
    ])
    with console().training("finetune", cfg.out_dir, steps):
        summary = finetune(cfg, out / "pretrain", [str(p) for p in train_files])
    encoding = gpt2_encoding()
    sampling = Sampling(max_new_tokens=24, temperature=0.8, top_k=50, seed=seed)
    prompt, question = "The river", "Which article is about a harbour?"
    pretrained, _ = load_model(out / "pretrain")  # continuing text is pretraining's skill; answering, fine-tuning's
    samples = [prompt + completion for completion in generate_text(pretrained, encoding, [prompt], sampling)]
    model, template = load_model(out / "finetune")
    if template is not None:
        reply = chat_reply(model, encoding, template, [{"role": "user", "content": question}], sampling)
        samples.append(f"user: {question}\nassistant: {reply}")
    return summary, samples


def run(args: argparse.Namespace) -> int:
    started = time.time()
    story: list[str] = []  # what the demo says, on stdout and at the top of its report

    def say(line: str) -> None:
        console().print(f"demo: {line}")
        story.append(line)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = run_options(args)  # from here on the logs go to <out>/logs/
    web = LocalWeb(seed=args.seed, n_hosts=args.hosts, pages_per_host=args.pages, hang_s=30.0)
    web.start()
    try:
        pages = web.pages()
        records, expected_urls = submissions_for_web([p.url for p in pages], seed=args.seed)
        planted = plant(web, pages, records, out / "archives")
        expected_urls = {url for url in expected_urls if not url.endswith(".pdf")}  # the extension blocklist
        # The local web's port is new each run, so the dump (and every stage after it) is rebuilt each run.
        dumps = out / "dumps"
        dumps.mkdir(exist_ok=True)
        for old in dumps.glob("*.zst"):
            old.unlink()
        write_dump(dumps / "RS_demo.zst", records, "zst")
        kinds = Counter(p.kind for p in pages)
        say(f"local web on 127.0.0.1:{web.port}: {args.hosts} sites, {len(pages)} pages "
            f"({kinds['article']} articles, {kinds['near_duplicate']} near duplicates, "
            f"{kinds['stub'] + kinds['foreign']} stubs or foreign, {len(pages) - sum(kinds[k] for k in PLANTED)} "
            f"robots-disallowed or faulty); "
            f"dump of {len(records):,} submissions in {dumps}/")
        in_archives = Counter(t[0] if t else "neither" for u, t in planted.truth.items()
                              if u in {normalize_url(e) for e in expected_urls})
        say(f"local archives: {sum(in_archives.values())} of the dead pages posted (404, 410, robots.txt "
            f"unreachable) planted: {in_archives['wayback']} recoverable from the Wayback archive (pywb on "
            f"{planted.wayback.base}), {in_archives['commoncrawl']} from Common Crawl only (columnar index + WARC in "
            f"a local S3), {in_archives['neither']} in neither")
        config = demo_config(web)
        config.crawl = config.crawl.model_copy(update={"source": "live+archive", "archive": planted.config})
        results = build_corpus([str(dumps)], str(out), config, options)
    finally:
        web.stop()
        if "planted" in locals():
            planted.stop()
    problems = check_against_truth(out, expected_urls, pages, planted.truth)
    for problem in problems:
        say(f"CHECK FAILED: {problem}")
    if not problems:
        funnel = {r.name: r.funnel for r in results}
        dropped = {k.split(":", 1)[1]: v for k, v in funnel["filter"].items() if k.startswith("rejected:")}
        say(f"every stage matches the planted truth: the URL table ({len(expected_urls)} URLs with "
            f"karma >= 3), every crawl outcome, the pages extracted, the filter's drops "
            f"({', '.join(f'{v} {k}' for k, v in sorted(dropped.items()))}) and one document kept per family of "
            f"duplicates ({funnel['dedup'].get('clusters', 0)} clusters, "
            f"{funnel['dedup'].get('rejected:exact_duplicate', 0)} exact and "
            f"{funnel['dedup'].get('rejected:near_duplicate', 0)} near duplicates removed)")
    crawl = next(r.funnel for r in results if r.name == "crawl")
    say(f"crawl sources: {crawl.get('source:live', 0)} pages live, {crawl.get('source:archive', 0)} recovered from "
        f"the archives, {crawl.get('source:lost', 0)} lost")
    summary = {r.name: r.funnel.get("out", 0) for r in results}
    say("corpus funnel: " + ", ".join(f"{k} {v:,}" for k, v in summary.items()))
    samples = []
    if args.steps:
        metrics = pretrain(out, args.steps, args.seed, args.model)
        say(f"pretrained the {args.model} GPT for {args.steps} steps with ZeRO-2 on 2 Ray Train workers: "
            f"val loss {metrics['val_loss']:.2f} nats/token (perplexity {metrics['val_ppl']:.0f}); token "
            f"frequencies alone score {unigram_baseline(out / 'tokenize'):.2f}, uniform over the vocabulary "
            f"{math.log(GPT2_N_VOCAB):.2f}")
        summary, samples = finetune_and_sample(out, args.finetune_steps, args.seed)
        hits = round(summary.get("val_exact_match", 0.0) * summary.get("val_qa_examples", 0))
        say(f"fine-tuned it on {summary['train_examples']} QA and dialogue examples for {args.finetune_steps} "
            f"steps: it answers {hits} of {summary.get('val_qa_examples', 0)} questions about "
            f"held-out pages exactly (their titles, read from a context it never trained on; answer loss "
            f"{summary['val_loss']:.2f} nats/token)")
        for sample in samples:
            console().print(f"demo: sample: {sample!r}")
    runs = {name: out / name for name in ("pretrain", "finetune")} if args.steps else {}
    report = write_report(str(out), runs, samples, title="webtext demo report", notes=story)
    console().print(f"demo: report in {report}")
    console().print(f"demo: done in {time.time() - started:.0f}s; outputs under {out}/ (logs in {out}/logs/)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.demo"))
