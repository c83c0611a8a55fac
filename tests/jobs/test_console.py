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
from dataclasses import replace
from pathlib import Path, PosixPath

import pytest
import yaml

from jobs.console import Line, StageProgress, TrainingProgress
from pipeline.runner import Progress

from tests.helpers import REPO
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


class Clock:
    """A monotonic clock for jobs.console that moves `step_s` seconds at each reading: every event comes more than
    the 30 s after which a line off a terminal is due even without a new tenth of the work."""

    def __init__(self, step_s: float = 31.0):
        self.now, self.step_s = 1000.0, step_s

    def monotonic(self) -> float:
        self.now += self.step_s
        return self.now


@pytest.fixture
def slow_clock(monkeypatch):
    import jobs.console

    clock = Clock()
    monkeypatch.setattr(jobs.console, "time", clock)
    return clock


def without_rates(line: str) -> str:
    return re.sub(r"  [\d,.]+ (records|tasks)/s|  ETA \d+:\d\d(:\d\d)?", "", line)


def test_off_a_terminal_repeated_stage_events_are_printed_once_per_phase_and_count(slow_clock):
    """A slow stage's events, each sent three times with the same counts (only the time differs): one line per
    phase and count, never one per event, however long apart they come."""

    def thrice(stream):
        for event in stream:
            for k in range(3):
                yield replace(event, elapsed_s=event.elapsed_s + k) if not event.finished else event
                if event.finished:
                    break

    text = render(False, thrice(events("dedup", ("minhash", "bands"), 2, 10)), thrice(events("urls", ("parts",), 2, 5)))
    lines = [without_rates(line) for line in text.splitlines()]
    assert lines == [
        "dedup    minhash 1/2  0/2 tasks  0 records", "dedup    minhash 1/2  1/2 tasks  10 records",
        "dedup    minhash 1/2  2/2 tasks  20 records", "dedup    bands 2/2  0/2 tasks  0 records",
        "dedup    bands 2/2  1/2 tasks  10 records", "dedup    bands 2/2  2/2 tasks  20 records",
        lines[6], "urls     0/2 tasks  0 records", "urls     1/2 tasks  5 records", "urls     2/2 tasks  10 records",
        lines[10]], text
    assert lines[6].startswith("dedup    done: 2 tasks, 20 records in ") and lines[10].startswith("urls     done: ")
    # On a terminal every event still redraws the line: the rate and ETA move with time.
    assert render(True, thrice(events("urls", ("parts",), 2, 5))).count("\r") == 3 * 3 + 1


class CountedReads(PosixPath):
    """A metrics file whose readers are counted: the test knows when the watcher's thread has polled it."""

    reads = 0

    def read_text(self, *args, **kwargs) -> str:
        type(self).reads += 1
        return super().read_text(*args, **kwargs)


def watch_training(path: Path, tty: bool, max_steps: int, batches: list[list[dict]], polls: int = 3) -> str:
    """What the training line prints while `path` grows by each batch of records in turn, each batch seen by at
    least `polls` polls of the watcher's thread."""

    def polled(n: int) -> None:
        until, deadline = CountedReads.reads + n, time.monotonic() + 60
        while CountedReads.reads < until and time.monotonic() < deadline:
            time.sleep(0.002)
        assert CountedReads.reads >= until, "the watcher did not poll"

    out = Terminal(tty)
    with TrainingProgress(Line(out, tty), "pretrain", CountedReads(path), max_steps=max_steps, poll_s=0.005):
        for batch in batches:
            with path.open("a") as f:
                f.writelines(json.dumps(record) + "\n" for record in batch)
            polled(polls + 1)
    return out.getvalue()


def step(n: int, loss: float, tokens_per_s: float = 1000.0) -> dict:
    return {"step": n, "loss": loss, "tokens_per_s": tokens_per_s}


def val(n: int, loss: float) -> dict:
    return {"step": n, "val_loss": loss, "val_ppl": 2.718 ** loss}


TRAINING = [[step(10, 9.5, 1450.0)], [step(20, 8.25, 1500.0)], [val(20, 8.5)], [step(30, 7.0)], [step(40, 6.5)],
            [val(40, 6.25)]]


@pytest.mark.parametrize("clock", ["real", "slow"])
def test_off_a_terminal_the_training_line_is_printed_once_per_step_and_once_more_when_a_val_loss_arrives(
        tmp_path, request, clock):
    """Each logged step and each validation loss seen by several polls, the steps slower than 30 s apart or not:
    one line per step, one more when its val loss comes, none twice (the ETA alone is no news)."""
    if clock == "slow":
        request.getfixturevalue("slow_clock")
    text = watch_training(tmp_path / "metrics.jsonl", False, 40, TRAINING)
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert [without_rates(line) for line in lines] == [
        "pretrain step 10/40  loss 9.500  1,450 tokens/s",
        "pretrain step 20/40  loss 8.250  1,500 tokens/s",
        "pretrain step 20/40  loss 8.250  val 8.500  1,500 tokens/s",
        "pretrain step 30/40  loss 7.000  val 8.500  1,000 tokens/s",
        "pretrain step 40/40  loss 6.500  val 8.500  1,000 tokens/s",
        "pretrain step 40/40  loss 6.500  val 6.250  1,000 tokens/s"], text
    assert all(("ETA " in line) == (" 20/40 " in line or " 30/40 " in line) for line in lines), text


def test_a_val_loss_that_comes_with_its_step_is_one_line_and_the_end_repeats_nothing(tmp_path):
    text = watch_training(tmp_path / "metrics.jsonl", False, 20, [[step(10, 9.5)], [step(20, 8.0), val(20, 8.1)]])
    assert text.splitlines() == ["pretrain step 10/20  loss 9.500  1,000 tokens/s",
                                 "pretrain step 20/20  loss 8.000  val 8.100  1,000 tokens/s"], text


def test_on_a_terminal_the_training_line_redraws_in_place_at_every_poll(tmp_path):
    text = watch_training(tmp_path / "metrics.jsonl", True, 40, TRAINING, polls=3)
    assert text.endswith("\x1b[K\n") and text.count("\n") == 1, text  # one line, redrawn
    draws = text.split("\r")[1:]
    assert len(draws) >= 3 * len(TRAINING) + 1, draws  # every poll redraws it, then its end
    assert draws[-1] == "pretrain step 40/40  loss 6.500  val 6.250  1,000 tokens/s\x1b[K\n"


# --- a real build-corpus, on a terminal (a pty) and off one ---------------------------------------------------------

@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """A local web of 3 sites, a dump that links to it, and the demo's build-corpus config for it."""
    from jobs.demo import demo_config
    from jobs.fixtures.dumpgen import submissions_for_web, write_dump
    from jobs.fixtures.localweb import LocalWeb

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
    progress = [line for line in text.split("\n") if line.startswith("\r")]
    assert len(progress) == len(STAGES), text  # one progress line per stage, redrawn in place, ending with its end
    for stage, line in zip(STAGES, progress):
        assert line.count("\r") >= 2 and re.search(rf"\r{stage} +done: [\d,]+ tasks?, [\d,]+ records in ", line), line
        assert all(redraw.startswith(stage) for redraw in line.split("\r")[1:]), line
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
        said = [without_rates(line) for line in lines]
        assert len(set(said)) == len(said), (stage, proc.stderr)  # no line twice, a new rate or ETA aside
    assert log in (out / "logs" / "driver.log").read_text()  # appended to, not replaced


@pytest.mark.slow
def test_verbose_brings_the_logs_back_to_the_terminal(small_corpus, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "jobs.urls", "--dumps", str(small_corpus / "dumps"), "--out", str(out)]
    verbose = subprocess.run([*args, "--verbose"], cwd=REPO, capture_output=True, text=True, timeout=600)
    quiet = subprocess.run([*args, "--force"], cwd=REPO, capture_output=True, text=True, timeout=600,
                           env={k: v for k, v in os.environ.items() if k != "WEBTEXT_VERBOSE"})
    assert verbose.returncode == 0 and quiet.returncode == 0, verbose.stderr + quiet.stderr
    # The records of Python's logging (here where Ray keeps its logs) on the terminal with --verbose, else only in
    # the log, which has them either way.
    assert re.search(r"INFO webtext: Ray session logs: /tmp/ray", verbose.stderr), verbose.stderr
    assert "Ray session logs" not in quiet.stderr and not NOISE.search(quiet.stderr), quiet.stderr
    assert len(re.findall(r"INFO webtext: Ray session logs: ", (out / "logs" / "driver.log").read_text())) == 2
    # Progress comes as sparse lines between the logs: never redrawn over them.
    assert re.search(r"^urls +done: ", verbose.stderr, re.M) and "\r" not in verbose.stderr
    assert "up to date" not in quiet.stderr and re.search(r"^urls +done: ", quiet.stderr, re.M)


def test_the_embedded_rays_trainer_has_no_placement_group_cleaner():
    """The cleaner asks the State API, which needs the dashboard the embedded Ray does not run: it could only fail,
    every second. The trainer for the embedded Ray leaves it out and keeps Ray Train's other callbacks."""
    from ray.train.torch import TorchTrainer

    from training.launch import _without_placement_group_cleaner

    def callbacks(cls) -> list[str]:
        trainer = cls(lambda config: None, scaling_config=ray_train_scaling())
        return [type(c).__name__ for c in trainer._create_default_callbacks()]

    plain, embedded = callbacks(TorchTrainer), callbacks(_without_placement_group_cleaner(TorchTrainer))
    assert "PlacementGroupCleanerCallback" in plain
    assert embedded == [name for name in plain if name != "PlacementGroupCleanerCallback"]


def ray_train_scaling():
    from ray.train import ScalingConfig

    return ScalingConfig(num_workers=1)


@pytest.mark.slow
def test_a_training_run_on_a_terminal_is_one_line_and_its_logs_are_in_the_log(tmp_path):
    """Two Ray Train workers with DeepSpeed, on a pty: the terminal shows one training line, the summary and the
    report; what Ray and DeepSpeed said is in <run>/logs/driver.log, less what was fixed where it came from."""
    from tests.helpers import tiny_config, write_token_dataset

    out = tmp_path / "run"
    config = tiny_config(write_token_dataset(tmp_path / "data"), out, max_steps=12, **{
        "launch.launcher": "ray", "launch.num_workers": 2, "launch.cpus_per_worker": 0.5, "zero.stage": 2})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    code, text = run_in_pty([sys.executable, "-m", "jobs.pretrain", "--config", str(tmp_path / "run.yaml")])
    assert code == 0, text
    # (Ray imports colorama, whose exit hook resets a terminal's colours: an escape sequence, nothing shown.)
    lines = [line for line in text.split("\n") if line.strip() and line != "\x1b[0m"]
    assert len(lines) == 3, text  # the training line, the summary, the report
    assert re.fullmatch(r"(\r.*\x1b\[K)*\rpretrain +step 12/12  loss \d+\.\d{3}  val \d+\.\d{3}  [\d,]+ tokens/s\x1b\[K",
                        lines[0]), lines[0]
    assert json.loads(lines[1])["step"] == 12 and lines[2].startswith("report in ")
    log = (out / "logs" / "driver.log").read_text()
    assert "RayTrainWorker pid=" in log and "Ray session logs: " in log  # the workers' output, streamed to the log
    for fixed in ("PlacementGroupCleaner", "PreemptionWatcher", "Setting accelerator to CPU"):
        assert fixed not in log, fixed


# --- errors say what to do ---------------------------------------------------------------------------------------

def cli(capsys, *args: str) -> tuple[int, list[str]]:
    from jobs.cli import main

    code = main(list(args))
    return code, [line for line in capsys.readouterr().err.splitlines() if line.startswith("webtext: ")]


def test_a_damaged_file_of_a_finished_stage_names_the_command_that_rebuilds_that_stage(tmp_path, capsys):
    from tests.helpers import docs_dir

    docs, out = docs_dir(tmp_path), tmp_path / "out"
    assert cli(capsys, "dedup", "--docs", str(docs), "--out", str(out), "--executor", "local")[0] == 0
    part = out / "dedup" / "part-00000.parquet"
    part.write_bytes(b"cut short by a full disk")
    code, said = cli(capsys, "tokenize", "--docs", str(out / "dedup"), "--out", str(out), "--executor", "local")
    assert code == 2 and len(said) == 2 and said[0].startswith(f"webtext: error: {part}: "), said
    rebuild = f"webtext dedup --docs {docs / 'part-00000.parquet'} --out {out} --force"
    assert said[1] == (f"webtext: what to do: part-00000.parquet is part of the dedup stage's finished output; "
                       f"rebuild dedup from its inputs: delete {out / 'dedup'}/ and rerun the command that built it "
                       f"(build-corpus skips the stages before it), or run `{rebuild}` with the config it was "
                       "built with")
    # What it says to run works: dedup is rebuilt from its inputs, and the command that failed then runs.
    assert cli(capsys, *rebuild.split()[1:], "--executor", "local")[0] == 0
    assert cli(capsys, "tokenize", "--docs", str(out / "dedup"), "--out", str(out), "--executor", "local")[0] == 0


def test_each_kind_of_error_says_what_is_true_for_it(tmp_path, capsys):
    """A representative set (a config key, an input, a path); tests/jobs/test_failures.py, tests/pipeline/test_lock.py and the training
    tests check the hints of the others (a full or read-only disk, a held output, a damaged checkpoint, a diverged
    run)."""
    from pipeline.config import ConfigError
    from pipeline.errors import StageError

    hint = "webtext: what to do: "
    # A bad key: fix it where it was given.
    assert cli(capsys, "dedup", "--docs", str(tmp_path), "--out", str(tmp_path / "o"), "--set", "treshold=0.5") == (
        2, ["webtext: error: unknown key 'treshold' (in defaults + --set treshold)", hint + ConfigError.hint])
    # An input that is not this stage's: fix or replace it; nothing was written.
    (tmp_path / "notes.txt").write_text("not a WARC\n")
    code, said = cli(capsys, "extract", "--warc", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "o"),
                     "--executor", "local")
    assert code == 2 and said[1:] == [hint + StageError.hint] and "notes.txt" in said[0], said
    # A missing input: check the path.
    code, said = cli(capsys, "dedup", "--docs", str(tmp_path / "gone"), "--out", str(tmp_path / "o"))
    assert code == 2 and said[1] == hint + "check the path: an input must exist (quote a glob so that webtext expands it)"


def test_deepspeed_is_told_its_accelerator_instead_of_warning_that_it_found_no_gpu():
    """Where webtext first imports DeepSpeed (a training rank, a reader of checkpoints), on a machine without CUDA."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine: DeepSpeed finds its GPU")
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    bare = subprocess.run([sys.executable, "-c", "import deepspeed.utils"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    ours = subprocess.run([sys.executable, "-c", "from training import checkpoint; checkpoint._deepspeed_safe_globals()"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert "Setting accelerator to CPU" in bare.stdout + bare.stderr  # what a run printed on every rank
    assert ours.returncode == 0 and "Setting accelerator" not in ours.stdout + ours.stderr, ours.stderr
