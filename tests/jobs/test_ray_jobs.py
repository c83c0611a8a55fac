"""The Ray Jobs API path of docs/scaling.md against a real head: `ray start --head` on 127.0.0.1 with its dashboard,
a `build_corpus` job submitted through `JobSubmissionClient` with the repository as its working_dir (what
`ray job submit --working-dir .` uploads), crawling a local web, and the stage manifests it leaves behind; then a
`pretrain` job on the shards it wrote, Ray Train placing 2 ranks on the head's CPUs.

The head is stopped through its own process group, never `ray stop`, which would kill every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.demo import demo_config
from jobs.fixtures.dumpgen import submissions_for_web, write_dump
from jobs.fixtures.localweb import LocalWeb
from tests.helpers import REPO

STAGES = ("urls", "crawl", "extract", "filter", "dedup", "tokenize")


def job_client(url: str):
    """A Jobs API client that sends the machine's Ray token (which a Ray 2.60 head creates and requires) itself:
    Ray's client adds it only when RAY_AUTH_MODE=token was set before ray was first imported in this process."""
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    token = os.environ.get("RAY_AUTH_TOKEN") or (token_file.read_text().strip() if token_file.exists() else "")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    from ray.job_submission import JobSubmissionClient

    deadline = time.time() + 30
    while True:  # the dashboard's HTTP server comes up a moment after the runtime
        try:
            return JobSubmissionClient(url, headers=headers)
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def run_job(client, entrypoint: str, timeout_s: float) -> str:
    """Submit with the repository as working_dir, wait for the end, return the logs; fail unless it succeeded."""
    runtime_env = {"working_dir": str(REPO), "excludes": [".venv", ".git", "out", "runs", "bench"]}
    deadline = time.time() + 60
    while True:  # the head's job agent registers a little after the dashboard answers ("No available agent")
        try:
            job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
            break
        except RuntimeError as err:
            if "No available agent" not in str(err) or time.time() > deadline:
                raise
            time.sleep(1)
    deadline = time.time() + timeout_s
    while (status := client.get_job_status(job_id)).is_terminal() is False and time.time() < deadline:
        time.sleep(1)
    logs = client.get_job_logs(job_id)
    assert status.value == "SUCCEEDED", logs[-4000:]
    return logs


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_build_corpus_then_pretrain_submitted_through_the_jobs_api(ray_head, tmp_path):
    web = LocalWeb(seed=3, n_hosts=4, pages_per_host=4, hang_s=30.0)
    web.start()
    try:
        records, expected_urls = submissions_for_web([p.url for p in web.pages()], seed=3)
        dump = write_dump(tmp_path / "RS_jobs.zst", records, "zst")
        out = tmp_path / "out"
        crawl = demo_config(web).crawl
        overrides = [f"crawl.{key}={json.dumps(getattr(crawl, key))}" for key in (
            "resolve", "allow_networks", "min_delay_s", "connect_timeout_s", "read_timeout_s", "total_timeout_s",
            "max_attempts", "backoff_base_s", "backoff_max_s", "max_retry_after_s")]
        overrides.append("tokenize.val_fraction=0.2")
        entrypoint = " ".join([sys.executable, "-m", "jobs.build_corpus", "--dumps", str(dump), "--out", str(out)]
                              + [f"--set '{o}'" for o in overrides])
        client = job_client(ray_head.dashboard_url)
        logs = run_job(client, entrypoint, timeout_s=150)
    finally:
        web.stop()

    # The job ran from the uploaded copy of the repository, not from this checkout.
    assert "corpus: 6 stages" in logs
    manifests = {stage: json.loads((out / stage / "_manifest.json").read_text()) for stage in STAGES}
    assert all(manifests[stage] for stage in STAGES)
    urls = {r["url_norm"] for p in sorted((out / "urls").glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()}
    assert len(urls) == len({u for u in expected_urls if not u.endswith(".pdf")})
    outcomes = [r["outcome"] for p in sorted((out / "crawl").glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert "ok" in outcomes  # the job's crawl reached the local web through the resolve override
    docs = [r for p in sorted((out / "dedup").glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert docs and all(d["text"] for d in docs)
    assert list((out / "tokenize").glob("part-train-*.bin"))

    run = tmp_path / "run"
    overrides = [f"out_dir={run}", f"data.train=['{out / 'tokenize'}']", "data.val=[]", "max_steps=4",
                 "batch.seq_len=64", "model.block_size=64", "batch.micro_batch_size=2", "batch.global_batch_size=4",
                 "launch.num_workers=2", "launch.cpus_per_worker=0.5", "checkpoint.every=4", "log.every=1",
                 "optim.warmup_steps=1"]
    logs = run_job(client, " ".join([sys.executable, "-m", "jobs.pretrain", "--config",
                                     "configs/pretrain_tiny.yaml"] + [f"--set \"{o}\"" for o in overrides]),
                   timeout_s=200)
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["step"], summary["world_size"]) == (4, 2), logs[-2000:]
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert (run / "checkpoints" / "step_00000004" / "COMPLETE").exists() and (run / "report.html").exists()
