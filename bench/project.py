"""The WebText-scale projection of docs/scaling.md, computed from the figures the benchmarks measured.

Reads bench/results/scale.json (bench/scale.py: every stage at 1x, 4x, 16x) and bench/results/dedup_million.json
(`bench/scale.py --dedup-million`), takes each stage's CPU seconds and bytes written per input unit at the largest
size measured, multiplies them by the stage's input at WebText scale, and writes the table between the markers in
docs/scaling.md. A figure it needs that the results do not hold is an error naming it; nothing is typed by hand
except the WebText quantities and the assumptions below, each printed under the table.

    python bench/project.py            # rewrite the table in docs/scaling.md
    python bench/project.py --check    # exit 1 if the table there is not what the figures give
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "scaling.md"
BEGIN, END = "<!-- projection:begin (bench/project.py writes this) -->", "<!-- projection:end -->"
STAGES = ("urls", "crawl", "extract", "filter", "dedup", "tokenize")

# WebText (Radford et al. 2019): ~45M outbound Reddit links, ~8M documents, ~40 GB of text after dedup and cleaning.
LINKS = 45e6
DOCUMENTS = 8e6
TEXT_BYTES = 40e9
TOKENS = 9e9
# Assumptions (not measured here; each printed under the table):
SUBMISSIONS = 450e6  # submission records in the Pushshift dumps up to December 2017 (order of magnitude)
DUMP_FILES = 151  # monthly RS_ files, 2005-06 .. 2017-12
RECORD_BYTES = 3.3e3  # a 2020s submission record, as jobs/fixtures/dumpgen.py generates them (older ones are smaller)
PRE_DEDUP_TEXT = LINKS * TEXT_BYTES / DOCUMENTS  # text of every link's page, at WebText's mean document size
HOURS = 24
CORES_PER_NODE = 32  # c6i.8xlarge (cluster.yaml)
FETCH_SECONDS = 0.5  # assumed mean time of one fetch on the internet (the local web answers in about 1 ms)
MIN_DELAY_S = 1.0  # the crawl's default delay between two requests to one host
GLOBAL_CONCURRENCY = 64  # the crawl's default requests in flight per task
# Default task sizes of the stages (their configs), for the number of objects written and read:
URLS_BUCKET_RAW_BYTES = 128 << 20
CRAWL_URLS_PER_BUCKET = 20_000
DEDUP_BUCKET_BYTES = 256 << 20


class MissingFigure(KeyError):
    def __str__(self) -> str:
        return f"missing figure: {self.args[0]} (run the benchmark that measures it; see bench/project.py)"


def figure(data: dict, *path: str):
    """data[path[0]][path[1]]..., or MissingFigure naming the whole path."""
    node = data
    for i, key in enumerate(path):
        if not isinstance(node, dict) or key not in node or node[key] is None:
            raise MissingFigure("/".join(path[: i + 1]))
        node = node[key]
    return node


def load(results: Path = RESULTS) -> dict:
    data = {}
    for name in ("scale", "dedup_million"):
        path = results / f"{name}.json"
        if not path.exists():
            raise MissingFigure(f"{name}.json")
        data[name] = json.loads(path.read_text())["figures"]
    return data


def per_unit(data: dict, stage: str) -> dict:
    """CPU seconds, bytes written and objects written per input unit (and per input byte) at the largest size."""
    sizes = figure(data, "scale", stage)
    top = str(max(int(s) for s in sizes))
    f = lambda key: figure(data, "scale", stage, top, key)  # noqa: E731
    units = f("units")
    out = {"cpu_per_unit": f("cpu_s") / units, "written_per_unit": f("bytes_written") / units,
           "unit": f("unit"), "objects_per_task": (f("files_written") - f("work_files")) / max(f("tasks"), 1)}
    if stage in ("extract", "filter", "dedup", "tokenize"):
        out["input_bytes_per_unit"] = f("input_bytes") / units
        out["cpu_per_byte"] = f("cpu_s") / f("input_bytes")
        out["written_per_byte"] = f("bytes_written") / f("input_bytes")
    return out


def projection(data: dict) -> list[dict]:
    """One row per stage: its input at WebText scale, core-hours, bytes written, S3 requests."""
    rows = []
    u = {stage: per_unit(data, stage) for stage in STAGES}
    # the dedup shuffle at 10^6 documents: work bytes per byte of text (the LSH rows, pairs and edges)
    million = figure(data, "dedup_million")
    top = str(max(int(n) for n in million))
    dedup_work_per_byte = figure(data, "dedup_million", top, "work_bytes") / figure(
        data, "dedup_million", top, "input_bytes")
    dedup_cpu_per_byte = figure(data, "dedup_million", top, "cpu_s") / figure(data, "dedup_million", top, "input_bytes")

    def row(stage: str, amount: float, unit: str, cpu: float, written: float, objects: float, note: str) -> None:
        rows.append({"stage": stage, "input": amount, "unit": unit, "core_hours": cpu / 3600, "bytes": written,
                     "requests": objects, "note": note})

    buckets = max(1, math.ceil(SUBMISSIONS * RECORD_BYTES / URLS_BUCKET_RAW_BYTES))
    # urls: every dump read once; a shuffle file per (dump, bucket), each written and read once; one part per bucket
    row("urls", SUBMISSIONS, "records", SUBMISSIONS * u["urls"]["cpu_per_unit"],
        SUBMISSIONS * u["urls"]["written_per_unit"], DUMP_FILES + 2 * DUMP_FILES * buckets + 3 * buckets,
        "one task per dump, then one per bucket")
    crawl_tasks = math.ceil(LINKS / CRAWL_URLS_PER_BUCKET)
    row("crawl", LINKS, "URLs", LINKS * u["crawl"]["cpu_per_unit"], LINKS * u["crawl"]["written_per_unit"],
        crawl_tasks * (1 + u["crawl"]["objects_per_task"]), "CPU only: wall time is politeness and latency")
    page_bytes = u["extract"]["input_bytes_per_unit"]
    row("extract", LINKS, "pages", LINKS * u["extract"]["cpu_per_unit"], LINKS * u["extract"]["written_per_unit"],
        crawl_tasks * (2 + u["extract"]["objects_per_task"]),
        f"per page of the local web ({page_bytes / 1e3:.0f} kB); real pages cost more (FACTS.md: 60 pages/s per core)")
    row("filter", PRE_DEDUP_TEXT, "text bytes", PRE_DEDUP_TEXT * u["filter"]["cpu_per_byte"],
        PRE_DEDUP_TEXT * u["filter"]["written_per_byte"], crawl_tasks * (1 + u["filter"]["objects_per_task"]),
        "every link's page a document: an upper bound")
    parts, shuffle = crawl_tasks, max(1, math.ceil(PRE_DEDUP_TEXT / DEDUP_BUCKET_BYTES))
    # dedup: P signature tasks write S bucket files each, S candidate tasks write P pair files each, all read once
    row("dedup", PRE_DEDUP_TEXT, "text bytes", PRE_DEDUP_TEXT * dedup_cpu_per_byte,
        PRE_DEDUP_TEXT * (u["dedup"]["written_per_byte"] + dedup_work_per_byte),
        4 * parts * shuffle + parts * (3 + u["dedup"]["objects_per_task"]) + shuffle,
        f"CPU and work-area bytes from the 10^{len(top) - 1} run; {parts:,} parts x {shuffle:,} buckets")
    row("tokenize", TEXT_BYTES, "text bytes", TEXT_BYTES * u["tokenize"]["cpu_per_byte"],
        TEXT_BYTES * u["tokenize"]["written_per_byte"], parts * (2 + u["tokenize"]["objects_per_task"]),
        f"~{TOKENS / 1e9:.0f}B tokens")
    return rows


def human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def table(rows: list[dict]) -> str:
    total_hours = sum(r["core_hours"] for r in rows)
    cores = total_hours / HOURS
    pages_per_s = LINKS / (HOURS * 3600)
    hosts = pages_per_s * max(FETCH_SECONDS, MIN_DELAY_S)  # a host serves one request per min_delay_s at most
    crawl_tasks = math.ceil(pages_per_s * FETCH_SECONDS / GLOBAL_CONCURRENCY)  # requests in flight / per task
    lines = [
        "| stage | input at WebText scale | core-hours | bytes written | S3 requests | |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['stage']} | {human(r['input'])} {r['unit']} | {r['core_hours']:,.1f} | "
                     f"{human(r['bytes'], 'B')} | {human(r['requests'])} | {r['note']} |")
    lines.append(f"| **all** | | **{total_hours:,.1f}** | **{human(sum(r['bytes'] for r in rows), 'B')}** | "
                 f"**{human(sum(r['requests'] for r in rows))}** | |")
    lines += [
        "",
        f"CPU to finish the corpus in {HOURS} h: {cores:,.1f} cores, i.e. {math.ceil(cores / CORES_PER_NODE)} "
        f"c6i.8xlarge ({CORES_PER_NODE} cores) for the CPU alone. The crawl's wall time is not CPU: {human(LINKS)} "
        f"links in {HOURS} h are {pages_per_s:,.0f} pages/s; with one request per host every {MIN_DELAY_S:.0f} s "
        f"(`min_delay_s`) and ~{FETCH_SECONDS} s a fetch, that is at least {hosts:,.0f} hosts busy at every moment "
        f"and {pages_per_s * FETCH_SECONDS:,.0f} requests in flight, {crawl_tasks} crawl tasks at the default "
        f"{GLOBAL_CONCURRENCY} each (a host with many links takes longer: one task owns each host).",
        "",
        f"Assumed, not measured: {human(SUBMISSIONS)} submission records in {DUMP_FILES} monthly dumps up to 2017; "
        "every one of the "
        f"{human(LINKS)} links fetched and kept until dedup ({human(PRE_DEDUP_TEXT, 'B')} of text at WebText's "
        f"{TEXT_BYTES / DOCUMENTS / 1e3:.0f} kB per document), an upper bound; S3 requests count one PUT per "
        "object written and one GET per object read, with the default task sizes (20,000 URLs per crawl task, "
        "128 MB of raw dump per urls bucket, 256 MB of text per dedup bucket).",
    ]
    return "\n".join(lines)


def render(doc: str, body: str) -> str:
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOC.relative_to(REPO)}: the markers {BEGIN!r} and {END!r} are missing")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{body}\n{END}{tail}"


def main(argv: list[str] | None = None, results: Path = RESULTS, doc_path: Path = DOC) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the table in the document is out of date")
    args = parser.parse_args(argv)
    try:
        body = table(projection(load(results)))
    except MissingFigure as missing:
        print(f"project: {missing}", file=sys.stderr)
        return 2
    doc = doc_path.read_text()
    new = render(doc, body)
    if args.check:
        if new != doc:
            print(f"project: the table in {doc_path.name} is not what the figures give: run bench/project.py",
                  file=sys.stderr)
            return 1
        return 0
    doc_path.write_text(new)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
