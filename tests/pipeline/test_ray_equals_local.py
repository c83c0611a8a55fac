"""Ray equals local, once for every stage: a stage run through the runner on the session's Ray (2 CPUs: tasks run
side by side and finish in any order) writes what the local executor writes, byte for byte — every part, reject
file and index — with the same funnel and manifest parts. The crawl's WARC records carry their fetch time and a
random record id, so for it the fetch log, the archived payloads and the digest of every record are compared."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from jobs.fixtures.dumpgen import synthetic_records, write_dump
from jobs.fixtures.dupgen import planted_corpus
from jobs.fixtures.dupgen import write_parts as write_doc_parts
from pipeline.crawl import CrawlStage
from pipeline.dedup import DedupConfig, DedupStage
from pipeline.extract import ExtractConfig, ExtractStage
from pipeline.filter import FilterConfig, FilterStage
from jobs.fixtures.localweb import LocalWeb
from pipeline.runner import RunOptions, run_stage
from pipeline.storage import expand_inputs
from pipeline.tokenize import TokenizeConfig, TokenizeStage
from pipeline.urls import UrlsConfig, UrlsStage
from tests.helpers import (COMPARED, config_of, crawl_dir, doc_row, fetch_log, make_docs, mixed_docs, ok_payloads,
                           warc_records, write_docs, write_parts, write_url_table)

LOCAL = RunOptions(executor="local", quiet=True)
RAY = RunOptions(executor="ray", quiet=True)


def urls_case(root: Path, resources: contextlib.ExitStack):
    """Dumps in every compression, several tasks each."""
    dumps = root / "dumps"
    dumps.mkdir()
    for i, compression in enumerate(["zst", "xz", "gz", None]):
        suffix = f".{compression}" if compression else ".ndjson"
        write_dump(dumps / f"RS_{i}{suffix}", synthetic_records(5000, seed=20 + i, id_prefix=f"f{i}_"), compression)
    return UrlsStage(UrlsConfig()), [dumps]


def crawl_case(root: Path, resources: contextlib.ExitStack):
    """A live local web with every fault, crawled in 3 buckets."""
    web = LocalWeb(seed=5, n_hosts=10, pages_per_host=3, faults_per_host=3, hang_s=10)
    web.start()
    resources.callback(web.stop)
    write_url_table(web, root / "urls")
    return CrawlStage(config_of(web, num_buckets=3)), [root / "urls"]


def extract_case(root: Path, resources: contextlib.ExitStack):
    """Two WARC parts with every kind of bad record, one fetch log joined by offset and one by URL."""
    crawl, _ = crawl_dir(root)
    return ExtractStage(ExtractConfig()), [crawl]


def filter_case(root: Path, resources: contextlib.ExitStack):
    """Two parts of documents each rule and language drops or keeps."""
    for p in range(2):
        write_docs(root / "docs" / f"part-{p:05d}.parquet",
                   [doc_row(10 * p + r["warc_offset"], r["text"], lang=r["lang"], lang_score=r["lang_score"])
                    for r in mixed_docs()])
    return FilterStage(FilterConfig()), [root / "docs"]


def dedup_case(root: Path, resources: contextlib.ExitStack):
    """Planted families of exact and near duplicates across 3 parts: the shuffle between phases on 2 workers."""
    write_doc_parts(planted_corpus(n_families=40, n_singletons=120, seed=3), root / "docs", 3)
    return DedupStage(DedupConfig()), [root / "docs"]


def tokenize_case(root: Path, resources: contextlib.ExitStack):
    """Three parts into several shards of each split."""
    write_parts(root / "docs", make_docs(300, seed=7), 3)
    return TokenizeStage(TokenizeConfig(shard_tokens=2000, val_fraction=0.1)), [root / "docs"]


CASES = {"urls": urls_case, "crawl": crawl_case, "extract": extract_case, "filter": filter_case,
         "dedup": dedup_case, "tokenize": tokenize_case}
SLOW = {"urls", "crawl", "dedup", "tokenize"}


def written(out: Path, stage: str) -> dict[str, bytes]:
    """Every file the stage left in its directory, but its manifest (which holds times): path -> bytes."""
    root = out / stage
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "_manifest.json"}


def manifest_parts(out: Path, stage: str) -> tuple[dict, list]:
    manifest = json.loads((out / stage / "_manifest.json").read_text())
    return manifest["funnel"], manifest["parts"]


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else []) for n in CASES])
def test_a_stage_on_ray_writes_what_it_writes_locally(name, tmp_path, ray_session):
    with contextlib.ExitStack() as resources:
        stage, inputs = CASES[name](tmp_path, resources)
        specs = expand_inputs([str(i) for i in inputs])
        local = run_stage(stage, specs, str(tmp_path / "local"), LOCAL)
        on_ray = run_stage(stage, specs, str(tmp_path / "ray"), RAY)
    assert local.funnel == on_ray.funnel and local.funnel["out"] > 0
    if name == "crawl":
        local_log, ray_log = fetch_log(tmp_path / "local"), fetch_log(tmp_path / "ray")
        assert ray_log.select(COMPARED).to_pylist() == local_log.select(COMPARED).to_pylist()
        assert ok_payloads(tmp_path / "ray") == ok_payloads(tmp_path / "local")
        assert warc_records(tmp_path / "ray") == warc_records(tmp_path / "local")
    else:
        on_disk = written(tmp_path / "local", name)
        assert any(path.startswith("part-") for path in on_disk)
        assert written(tmp_path / "ray", name) == on_disk
        assert manifest_parts(tmp_path / "ray", name) == manifest_parts(tmp_path / "local", name)
