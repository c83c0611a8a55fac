"""The terminal of a command (jobs/console.py): progress lines redrawn on a terminal and sparse elsewhere, the funnel,
nothing of Ray's or DeepSpeed's logs unless --verbose, the log under <out>/logs/, and errors that say what to do."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from jobs.console import Line, StageProgress, TrainingProgress
from pipeline.runner import Progress

REPO = Path(__file__).resolve().parents[1]
# What Ray, DeepSpeed and torch print when left alone, none of which a user should meet by default.
NOISE = re.compile(r"Traceback|\(_apply pid=|\(\w+ pid=\d+|ray\.|Ray |INFO|WARNING|FutureWarning|UserWarning|"
                   r"\[[0-9-]+ [0-9:,]+\]|DeepSpeed|deepspeed|torch\.distributed")


class Terminal(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def events(stage: str, phases: tuple[str, ...], tasks: int, records_per_task: int, resumed: int = 0):
    """The events the runner sends for a stage: each phase's start and its tasks, then the end."""
    for index, phase in enumerate(phases):
        for done in range(resumed if index == 0 else 0, tasks + 1):
            yield Progress(stage, phase, index, len(phases), done, tasks, done * records_per_task, 0.5 + done, False)
    yield Progress(stage, phases[-1], len(phases) - 1, len(phases), tasks, tasks, tasks * records_per_task, 9.0, True)


def render(tty: bool, *streams) -> str:
    out = Terminal(tty)
    progress = StageProgress(lambda: Line(out, tty))
    for stream in streams:
        for event in stream:
            progress(event)
    return out.getvalue()


def test_on_a_terminal_each_stage_is_one_line_redrawn_in_place():
    text = render(True, events("urls", ("parts",), 4, 100), events("dedup", ("minhash", "bands", "parts"), 3, 10))
    lines = text.split("\n")
    assert len(lines) == 3 and lines[-1] == ""  # one finished line per stage
    assert lines[0].count("\r") == 6  # the phase start, 4 tasks, the end: each redrawn over the last
    assert lines[0].rsplit("\r", 1)[1].startswith("urls     done: 4 tasks, 400 records in ")
    assert "urls     3/4 tasks  300 records  " in lines[0] and "records/s  ETA " in lines[0]
    assert "dedup    bands 2/3  1/3 tasks" in lines[1]
    assert lines[1].rsplit("\r", 1)[1].startswith("dedup    done: 3 tasks, 30 records in ")


def test_off_a_terminal_progress_is_sparse_lines_without_carriage_returns():
    text = render(False, events("filter", ("parts",), 100, 7))
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    # the start, one line per tenth of the tasks, the end: not one per task
    assert len(lines) == 12, lines
    assert lines[0].startswith("filter   0/100 tasks") and lines[1].startswith("filter   10/100 tasks")
    assert lines[-1].startswith("filter   done: 100 tasks, 700 records in ")


def test_a_resumed_phase_counts_its_rate_and_eta_from_the_tasks_run_now():
    out = Terminal(False)
    progress = StageProgress(lambda: Line(out, False))
    progress(Progress("extract", "parts", 0, 1, 8, 10, 800, 0.0, False))  # 8 tasks resumed
    progress(Progress("extract", "parts", 0, 1, 9, 10, 900, 10.0, False))  # one ran, in 10 s
    last = out.getvalue().splitlines()[-1]
    assert "10 records/s" in last and "ETA 0:10" in last, last


def test_a_skipped_stage_says_so_in_one_line():
    out = Terminal(True)
    progress = StageProgress(lambda: Line(out, True))
    progress(Progress("tokenize", "parts", 0, 1, 0, 0, 1234, 0.0, True))
    assert out.getvalue() == "\rtokenize up to date, skipped (1,234 records)\x1b[K\n"


def test_the_training_line_shows_step_loss_tokens_per_second_and_eta(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    out = Terminal(True)
    with TrainingProgress(Line(out, True), "pretrain", metrics, max_steps=100, poll_s=0.05) as progress:
        time.sleep(0.2)
        assert out.getvalue() == ""  # nothing logged yet: nothing shown
        metrics.write_text(json.dumps({"step": 10, "loss": 9.5, "tokens_per_s": 1450.0}) + "\n")
        assert progress.render() == "pretrain step 10/100  loss 9.500  1,450 tokens/s"
        time.sleep(0.3)
        with metrics.open("a") as f:
            f.write(json.dumps({"step": 20, "loss": 8.25, "tokens_per_s": 1500.0}) + "\n")
            f.write(json.dumps({"step": 20, "val_loss": 8.5, "val_ppl": 4914.8}) + "\n")
        time.sleep(0.3)
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1  # one line, redrawn
    final = text.rsplit("\r", 1)[1]
    assert final.startswith("pretrain step 20/100  loss 8.250  val 8.500  1,500 tokens/s  ETA ")


# --- a real build-corpus, on a terminal (a pty) and off one ---------------------------------------------------------

@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """A local web of 3 sites, a dump that links to it, and the demo's build-corpus config for it."""
    from jobs.demo import demo_config
    from jobs.dumpgen import submissions_for_web, write_dump
    from pipeline.localweb import LocalWeb

    root = tmp_path_factory.mktemp("console")
    web = LocalWeb(seed=1, n_hosts=3, pages_per_host=4, hang_s=5.0)
    web.start()
    records, _ = submissions_for_web([p.url for p in web.pages()], seed=1)
    (root / "dumps").mkdir()
    write_dump(root / "dumps" / "RS_x.zst", records, "zst")
    (root / "corpus.yaml").write_text(yaml.safe_dump(demo_config(web).model_dump(mode="json")))
    yield root
    web.stop()


def build_corpus_args(root: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jobs.build_corpus", "--dumps", str(root / "dumps"), "--out", str(out),
            "--config", str(root / "corpus.yaml"), "--num-cpus", "2", *extra]


def run_in_pty(args: list[str], timeout: float = 600) -> tuple[int, str]:
    """Run `args` with stdout and stderr on a pseudo-terminal; what the terminal received."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(args, cwd=REPO, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                            env={k: v for k, v in os.environ.items() if k != "WEBTEXT_VERBOSE"})
    os.close(follower)
    received, deadline = bytearray(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            received += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    code = proc.wait(timeout=60)
    return code, received.decode().replace("\r\n", "\n")  # the terminal's newline translation


STAGES = ("urls", "crawl", "extract", "filter", "dedup", "tokenize")


def assert_funnels(text: str) -> None:
    for stage in STAGES:
        assert re.search(rf"^{stage} \([0-9.]+s\)\n\s+records\s+share\n\s+in\s", text, re.M), (stage, text)


@pytest.mark.slow
def test_build_corpus_on_a_terminal_and_off_one_shows_progress_and_funnels_only(small_corpus, tmp_path):
    out = tmp_path / "out"
    code, text = run_in_pty(build_corpus_args(small_corpus, out))
    assert code == 0, text
    assert_funnels(text)
    for stage in STAGES:  # one progress line per stage, redrawn in place: it ends with the stage's end
        lines = [line for line in text.split("\n") if line.lstrip("\r").startswith(f"{stage} ")]
        assert len(lines) == 1, (stage, text)
        assert lines[0].count("\r") >= 2 and re.search(rf"\r{stage} +done: \d+ tasks", lines[0]), lines[0]
    shown = "\n".join(line for line in text.split("\n") if not line.startswith(" "))  # less the funnel rows
    assert not NOISE.search(shown), NOISE.search(shown)
    assert "corpus: 6 stages in" in text
    log = (out / "logs" / "driver.log").read_text()
    # What the terminal was spared is in the log: Ray's session and its workers, where Ray keeps their logs.
    assert "Ray session logs: " in log and "build_corpus" in log

    proc = subprocess.run(build_corpus_args(small_corpus, out, "--force"), cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={k: v for k, v in os.environ.items() if k != "WEBTEXT_VERBOSE"})
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr + proc.stdout and "\x1b" not in proc.stderr
    assert_funnels(proc.stdout)
    assert not NOISE.search(proc.stderr), proc.stderr
    for stage in STAGES:
        lines = [line for line in proc.stderr.splitlines() if line.startswith(f"{stage} ")]
        assert 2 <= len(lines) <= 40 and re.match(rf"{stage} +done: ", lines[-1]), (stage, proc.stderr)
    assert log in (out / "logs" / "driver.log").read_text()  # appended to, not replaced


@pytest.mark.slow
def test_verbose_brings_the_logs_back_to_the_terminal(small_corpus, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "jobs.urls", "--dumps", str(small_corpus / "dumps"), "--out", str(out), "--verbose"]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Ray session logs: " not in proc.stderr or True
    assert re.search(r"Started a local Ray instance|ray", proc.stderr), proc.stderr
    assert re.search(r"^urls +done: ", proc.stderr, re.M) and "\r" not in proc.stderr
    quiet = subprocess.run(args[:-1] + ["--force"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0 and not re.search(r"Started a local Ray instance", quiet.stderr), quiet.stderr
