"""Cost curves: every corpus stage at 1x, 4x and 16x its input, on one machine, in one run.

Stages and inputs (each size is generated here; a stage's input at a size is the previous stage's output at that
size where the chain allows it):
- urls: a Pushshift-like .zst dump of 2020s-size records (3.3 kB, ~110 keys), BASE_RECORDS x size records;
- crawl: the local web (jobs.fixtures.localweb, in this process) with 100 x size hosts (100 -> 1,600), PAGES_PER_HOST
  articles each, no added latency and no politeness delay, so the crawler's own CPU is what is measured;
- extract: the crawl's WARC files at that size; filter: extract's documents;
- dedup: planted duplicate families (jobs.fixtures.dupgen) of BASE_DEDUP_DOCS x size documents in 2 x size parts, the
  default config (one shuffle bucket per 256 MB of input);
- tokenize: dedup's output at that size.
Each (stage, size) runs in a child process (`run_stage`, executor local, one core): its CPU seconds, peak RSS
(VmHWM), RSS before the stage (imports done), bytes and files it wrote (the work area kept and counted) and its
funnel. Throughput is input units per CPU-second (per core); its ratio at 16x to 1x should be >= 0.85 for
every stage (fixed costs of a run, such as trafilatura's first-page setup, favour the large sizes; a cost that
grows faster than the input shows as a ratio below 1). Peak RSS at 16x over 1x should be <= 1.25 where the
stage's design says memory is flat (`FLAT`, as each stage's docstring says): urls, crawl (in the number of hosts
too, its frontier), extract, filter; dedup and tokenize hold a row per document (with a duplicate) in one task, so
their peak is printed, not held to a goal. Each (stage, size) runs `--repeats` times (3): medians.

`--dedup-million` instead runs dedup alone at 10^5 and 10^6 documents (parts of 50k documents, the default
config: one shuffle bucket per 256 MB of text): wall time, CPU time, peak RSS and bytes written to the work area (the LSH shuffle, pairs, edges),
and their growth over the 10x. It takes tens of minutes. `--quick` is a CI-size sanity run (not a benchmark).

Writes the figures to bench/results/scale.json (or dedup_million.json); bench/project.py turns them into the
WebText-scale table of docs/scaling.md. Ends with RESULT lines (see DESIGN.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stage_child import run_child  # noqa: E402  (bench/, beside this script)

REPEATS = 3

SIZES = (1, 4, 16)
BASE_RECORDS = 10_000
BASE_HOSTS = 100
PAGES_PER_HOST = 2
BASE_DEDUP_DOCS = 1_000
DEDUP_PART_DOCS = 50_000
QUICK = {"records": 500, "hosts": 5, "pages": 2, "dedup_docs": 150}
STAGES = ("urls", "crawl", "extract", "filter", "dedup", "tokenize")
FLAT = ("urls", "crawl", "extract", "filter")  # memory flat in the input by design (their docstrings say why)
RESULTS = REPO / "bench" / "results"


# -- inputs -------------------------------------------------------------------------------------------------------

def text_bytes(directory: Path, column: str = "text") -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    return sum(int(pc.sum(pc.binary_length(pq.read_table(p, columns=[column])[column])).as_py() or 0)
               for p in directory.glob("part-*.parquet"))


def planted_parts(directory: Path, n_docs: int, n_parts: int, seed: int) -> None:
    """`n_docs` documents with planted duplicates over `n_parts` Parquet parts, dealt out round-robin so families
    cross parts, generated in numpy chunks (memory flat in n_docs; 10^6 documents in about a minute).

    As jobs.dupgen.planted_corpus plants them: per family a base text of 150-400 words (Zipf-like over 20,000
    words), an exact copy in upper case, copies with 2, 5, 10 and 30 % of the words replaced, and for every fourth
    family two pages that share only a boilerplate header and footer; then singletons, 5 per family."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.fixtures.dupgen import BOILERPLATE, EDIT_RATES
    from pipeline.documents import DOC_SCHEMA

    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    vocab = ["".join(rng.choice(letters[: 8 + i % 18], rng.integers(2, 10))) for i in range(20_000)]

    def words(n: int) -> np.ndarray:
        zipf = np.minimum(rng.zipf(1.1, n) - 1, len(vocab) - 1)
        return np.where(rng.random(n) < 0.5, zipf, rng.integers(0, len(vocab), n))

    def text(ids: np.ndarray) -> str:
        return " ".join(map(vocab.__getitem__, ids.tolist())).capitalize() + "."

    directory.mkdir(parents=True, exist_ok=True)
    writers = [pq.ParquetWriter(directory / f"part-{p:05d}.parquet", DOC_SCHEMA) for p in range(n_parts)]
    done = 0
    while done < n_docs:
        texts: list[str] = []
        for f in range(max(1, min(20_000, n_docs - done) // 12)):
            base = words(int(rng.integers(150, 401)))
            texts += [text(base), "  " + text(base).upper()]
            for rate in EDIT_RATES:
                edited = base.copy()
                where = rng.choice(len(base), int(round(rate * len(base))), replace=False)
                edited[where] = rng.integers(0, len(vocab), len(where))
                texts.append(text(edited))
            if f % 4 == 0:
                texts += [BOILERPLATE + text(words(120)) + " " + BOILERPLATE for _ in range(2)]
            texts += [text(words(int(rng.integers(150, 401)))) for _ in range(5)]
        texts = [texts[i] for i in rng.permutation(len(texts))][: n_docs - done]
        n = len(texts)
        ids = [f"doc{done + i:08d}" for i in range(n)]
        table = pa.table({
            "doc_id": ids, "url": [f"http://site{i % 13}.example/{i}" for i in range(done, done + n)],
            "text": texts, "score": rng.choice([3, 5, 8, 13, 40, 100], n),
            "date": [f"20{10 + d % 10}-0{1 + d % 9}-1{d % 10}" for d in rng.integers(0, 1000, n).tolist()],
        })
        table = pa.table([table[f.name] if f.name in table.column_names else pa.nulls(n, f.type)
                          for f in DOC_SCHEMA], schema=DOC_SCHEMA)
        for p, writer in enumerate(writers):
            writer.write_table(table.take(np.arange(p, n, n_parts)))
        done += n
    for writer in writers:
        writer.close()


def crawl_config(web) -> dict:
    return {"resolve": web.resolve(), "allow_networks": ["127.0.0.1/32"], "min_delay_s": 0.0, "num_buckets": 1,
            "global_concurrency": 64, "connect_timeout_s": 5.0, "read_timeout_s": 10.0, "total_timeout_s": 20.0}


# -- the run ------------------------------------------------------------------------------------------------------

def run_median(spec: dict, repeats: int) -> dict:
    """`run_child(spec)` `repeats` times: the last run's figures with the median CPU and wall seconds and peak RSS
    (each run's kept under `runs`)."""
    import statistics

    runs = [run_child(spec) for _ in range(repeats)]
    medians = {k: statistics.median(r[k] for r in runs) for k in ("cpu_s", "wall_s", "peak_rss", "baseline_rss")}
    return {**runs[-1], **medians, "runs": [{k: r[k] for k in medians} for r in runs]}


def measure_sizes(tmp: Path, quick: bool, repeats: int = REPEATS) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.fixtures.dumpgen import write_large_zst
    from jobs.fixtures.localweb import LocalWeb

    records = QUICK["records"] if quick else BASE_RECORDS
    hosts = QUICK["hosts"] if quick else BASE_HOSTS
    pages = QUICK["pages"] if quick else PAGES_PER_HOST
    dedup_docs = QUICK["dedup_docs"] if quick else BASE_DEDUP_DOCS
    figures: dict = {stage: {} for stage in STAGES}
    web = LocalWeb(seed=3, n_hosts=hosts * max(SIZES), pages_per_host=pages, faults_per_host=0, robots_faults=False)
    web.start()
    try:
        for size in SIZES:
            out = tmp / f"x{size}"
            print(f"== {size}x", flush=True)
            dump = write_large_zst(tmp / f"RS_x{size}.zst", records * size, seed=size, era="2020s")
            run = run_median({"stage": "urls", "inputs": [str(dump)], "out": str(out)}, repeats)
            figures["urls"][size] = {**run, "units": run["funnel"]["in"], "unit": "records",
                                     "input_bytes": dump.stat().st_size}

            urls_dir = tmp / f"urls_x{size}"
            urls_dir.mkdir()
            url_list = [web.url(h, f"/article/{k}") for k in range(pages) for h in range(hosts * size)]
            pq.write_table(pa.table({"url": url_list}), urls_dir / "part-00000.parquet")
            run = run_median({"stage": "crawl", "inputs": [str(urls_dir)], "out": str(out),
                             "config": crawl_config(web)}, repeats)
            assert run["funnel"].get("outcome:ok") == len(url_list), run["funnel"]
            figures["crawl"][size] = {**run, "units": len(url_list), "unit": "URLs", "hosts": hosts * size}

            run = run_median({"stage": "extract", "inputs": [str(out / "crawl")], "out": str(out)}, repeats)
            html = sum(int(pq.read_table(p, columns=["bytes"])["bytes"].to_numpy().sum())
                       for p in (out / "crawl").glob("part-*.parquet"))
            figures["extract"][size] = {**run, "units": run["funnel"]["in"], "unit": "pages", "input_bytes": html}

            run = run_median({"stage": "filter", "inputs": [str(out / "extract")], "out": str(out)}, repeats)
            figures["filter"][size] = {**run, "units": run["funnel"]["in"], "unit": "documents",
                                       "input_bytes": text_bytes(out / "extract")}

            docs = tmp / f"planted_x{size}"
            planted_parts(docs, dedup_docs * size, 2 * size, seed=100 * size)
            run = run_median({"stage": "dedup", "inputs": [str(docs)], "out": str(out)}, repeats)
            figures["dedup"][size] = {**run, "units": run["funnel"]["in"], "unit": "documents",
                                      "input_bytes": text_bytes(docs)}

            run = run_median({"stage": "tokenize", "inputs": [str(out / "dedup")], "out": str(out),
                             "config": {"shard_tokens": 1 << 20}}, repeats)
            figures["tokenize"][size] = {**run, "units": text_bytes(out / "dedup"), "unit": "text bytes",
                                         "input_bytes": text_bytes(out / "dedup"), "tokens": run["funnel"].get("tokens")}
    finally:
        web.stop()
    return figures


def report_sizes(figures: dict) -> list[str]:
    results = []
    print(f"\n{'stage':<9} {'size':>4} {'units':>10} {'unit':<10} {'per core/s':>11} {'vs 1x':>6} "
          f"{'peak MiB':>8} {'vs 1x':>6} {'work MiB':>8} {'written MB':>10} {'files':>6}")
    for stage in STAGES:
        base = figures[stage][1]
        for size, f in figures[stage].items():
            rate = f["units"] / f["cpu_s"]
            f["rate_per_core"] = rate
            f["rate_vs_1x"] = rate / (base["units"] / base["cpu_s"])
            f["peak_vs_1x"] = f["peak_rss"] / base["peak_rss"]
            print(f"{stage:<9} {size:>3}x {f['units']:>10,} {f['unit']:<10} {rate:>11,.1f} {f['rate_vs_1x']:>6.2f} "
                  f"{f['peak_rss'] / 2**20:>8.0f} {f['peak_vs_1x']:>6.2f} "
                  f"{(f['peak_rss'] - f['baseline_rss']) / 2**20:>8.0f} {f['bytes_written'] / 1e6:>10.1f} "
                  f"{f['files_written']:>6}")
    top = max(SIZES)
    for stage in STAGES:
        f = figures[stage][top]
        results.append(f"RESULT {stage}_throughput_{top}x_vs_1x={f['rate_vs_1x']:.2f} goal>=0.85")
    for stage in FLAT:
        f = figures[stage][top]
        results.append(f"RESULT {stage}_peak_rss_{top}x_vs_1x={f['peak_vs_1x']:.2f} goal<=1.25")
    hosts = figures["crawl"][top]["hosts"]
    results.append(f"RESULT crawl_peak_rss_{hosts}_hosts_vs_{figures['crawl'][1]['hosts']}="
                   f"{figures['crawl'][top]['peak_vs_1x']:.2f} goal<=1.25")
    return results


def dedup_million(tmp: Path, quick: bool, sizes: list[int] | None = None) -> tuple[dict, list[str]]:
    """Dedup alone at each size; sizes already in the results file are kept (one size at a time can be added)."""
    sizes = sizes or ([10_000, 100_000] if quick else [100_000, 1_000_000])
    saved = RESULTS / ("dedup_million.quick.json" if quick else "dedup_million.json")
    figures = json.loads(saved.read_text())["figures"] if saved.exists() else {}
    figures = {int(n): f for n, f in figures.items() if int(n) not in sizes}
    for n in sizes:
        parts = max(1, n // DEDUP_PART_DOCS)
        docs = tmp / f"docs_{n}"
        started = time.perf_counter()
        planted_parts(docs, n, parts, seed=7)
        generated = time.perf_counter() - started
        print(f"== dedup {n:,} documents in {parts} parts (generated in {generated:.0f}s)", flush=True)
        run = run_child({"stage": "dedup", "inputs": [str(docs)], "out": str(tmp / f"out_{n}")})
        figures[n] = {**run, "units": n, "parts": parts, "input_bytes": text_bytes(docs),
                      "generate_s": generated}
        save("dedup_million", figures, quick)  # after each size: a 10^6 run cut short keeps 10^5
        print(f"  wall {run['wall_s']:.0f}s cpu {run['cpu_s']:.0f}s peak {run['peak_rss'] / 2**20:.0f} MiB "
              f"work area {run['work_bytes'] / 1e6:.0f} MB in {run['work_files']} files; funnel {run['funnel']}",
              flush=True)
        shutil.rmtree(docs)
        shutil.rmtree(tmp / f"out_{n}")
    sizes = sorted(figures)[-2:]  # the largest against the one before it
    small, large = (figures[n] for n in sizes)
    growth = sizes[1] / sizes[0]
    results = [
        f"RESULT dedup_{sizes[1]}_cpu_per_doc_vs_{sizes[0]}={large['cpu_s'] / small['cpu_s'] / growth:.2f} goal<=1.25",
        f"RESULT dedup_{sizes[1]}_wall_per_doc_vs_{sizes[0]}={large['wall_s'] / small['wall_s'] / growth:.2f} goal<=1.25",
        f"RESULT dedup_{sizes[1]}_work_bytes_per_doc_vs_{sizes[0]}="
        f"{large['work_bytes'] / small['work_bytes'] / growth:.2f} goal<=1.25",
        f"RESULT dedup_{sizes[1]}_peak_rss_vs_{sizes[0]}={large['peak_rss'] / small['peak_rss']:.2f} goal<={growth:.0f}",
    ]
    return figures, results


def save(name: str, figures: dict, quick: bool) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / (f"{name}.quick.json" if quick else f"{name}.json")
    meta = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
            "load_average": os.getloadavg(), "python": sys.version.split()[0], "command": " ".join(sys.argv[1:])}
    path.write_text(json.dumps({"meta": meta, "figures": figures}, indent=1, sort_keys=True) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-size inputs: checks the bench runs, measures little")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="runs of each stage and size (medians kept)")
    parser.add_argument("--dedup-million", action="store_true", help="dedup alone at 10^5 and 10^6 documents")
    parser.add_argument("--sizes", type=int, nargs="+", metavar="N", help="--dedup-million: the sizes to run "
                        "(default 100000 1000000; others already measured are kept)")
    args = parser.parse_args(argv)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        if args.dedup_million:
            figures, results = dedup_million(Path(tmp), args.quick, args.sizes)
            path = save("dedup_million", figures, args.quick)
        else:
            figures = measure_sizes(Path(tmp), args.quick, args.repeats)
            results = report_sizes(figures)
            path = save("scale", figures, args.quick)
    print(f"figures: {path.relative_to(REPO)}; load average at end: {os.getloadavg()[0]:.1f}")
    print("\n".join(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
