"""Helpers the tests share: paths of the repository and of the real data, Ray nodes started as a user would,
documents / WARCs / token shards / configs written the way each stage writes them. Plain functions only: fixtures
live in conftest.py files, and no test imports conftest or another test module."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from jobs.fixtures.localweb import LocalWeb
from pipeline.config import Config
from pipeline.crawl import CrawlConfig
from pipeline.documents import DOC_SCHEMA
from pipeline.runner import Phase, Stage, StageError
from pipeline.shards import shard_header
from pipeline.urlnorm import normalize_url

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SHARED_DATA = REPO.parent / "shared" / "data"
FAULTS = Path(__file__).parent / "faults"  # its sitecustomize.py kills rank 0 after a given step
KILL_AT_STEP_ENV = "WEBTEXT_TEST_KILL_AT_STEP"


def kill_env(step: int, pythonpath: str | None = None) -> dict[str, str]:
    """The environment under which a training run's rank 0 is SIGKILLed after `step` (tests/faults)."""
    return {KILL_AT_STEP_ENV: str(step), "PYTHONPATH": os.pathsep.join(filter(None, [str(FAULTS), pythonpath]))}


def kill_at_step(monkeypatch, step: int) -> None:
    """Runs launched after this in the test (their ranks inherit the environment) die after `step`."""
    for key, value in kill_env(step, os.environ.get("PYTHONPATH")).items():
        monkeypatch.setenv(key, value)


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data; the calling test is skipped when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} is absent")
    return path


# --- Ray nodes started with `ray start`, as a user would -------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray_node(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """`ray start --block` on 127.0.0.1 in a process group of its own; returns once its runtime has started."""
    node = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--block", "--node-ip-address", "127.0.0.1",
         "--disable-usage-stats", *args,
         # Ports of our own: the agents' defaults (52365, ...) may be held by another Ray on this machine, such as
         # the test session's, and a job agent that cannot bind leaves the Jobs API with "No available agent".
         "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
         "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
         *(["--ray-client-server-port", str(free_port())] if "--head" in args else [])],
        # On SIGTERM a node drains for up to 30 s before it stops (for Serve replicas, which these clusters never
        # run): the test stops it at once.
        env={**env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)
    said = []
    for line in node.stdout:
        if "Ray runtime started" in line:
            return node
        said.append(line)
    stop_ray_node(node)
    pytest.fail(f"ray start {' '.join(args)} exited before its runtime started:\n{''.join(said[-30:])}")


def kill_when_written(command: list[str], root: Path, pattern: str, count: int, timeout_s: float) -> list[Path]:
    """Run `command` (from the repository) and SIGKILL it once `count` files match `pattern` under `root` (or at
    `timeout_s`); the matching files then, sorted: what a crash mid-run leaves behind."""
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(list(root.glob(pattern))) < count:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    return sorted(root.glob(pattern))


def stop_ray_node(node: subprocess.Popen) -> None:
    """Through the node's own process group: `ray stop` would kill every Ray on the machine, the session's included."""
    os.killpg(node.pid, signal.SIGTERM)
    node.wait(timeout=60)


# --- the crawl against a local web -------------------------------------------------------------------------------


COMPARED = ["url", "url_norm", "outcome", "status", "final_url", "content_type", "bytes"]


def fast_settings(web: LocalWeb, **extra) -> list[str]:
    settings = {"allow_networks": ["127.0.0.0/8"], "resolve": web.resolve(), "total_timeout_s": 1.5,
                "read_timeout_s": 1.0,
                "connect_timeout_s": 1.0, "backoff_base_s": 0.05, "max_body_bytes": 1 << 20,
                "max_decoded_bytes": 4 << 20, "min_delay_s": 0.02, "retry_budget": 1.0, **extra}
    return [item for key, value in settings.items() for item in ("--set", f"{key}={json.dumps(value)}")]


def config_of(web: LocalWeb, **extra) -> CrawlConfig:
    args = fast_settings(web, **extra)
    return CrawlConfig(**{a.split("=", 1)[0]: json.loads(a.split("=", 1)[1]) for a in args[1::2]})


def write_url_table(web: LocalWeb, directory: Path) -> dict[str, object]:
    """A urls-stage part for every page of the web; returns page by url."""
    pages = web.pages()
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "url": [p.url for p in pages],
        "url_norm": [normalize_url(p.url) for p in pages],
        "host": [p.host for p in pages],
        "subreddits": [["r/test", f"r/{p.kind}"] for p in pages],
        "score_max": list(range(3, 3 + len(pages))),
        "score_sum": list(range(3, 3 + len(pages))),
        "n_submissions": [1] * len(pages),
        "first_utc": [1_500_000_000] * len(pages),
        "ids": [[f"id{i}"] for i in range(len(pages))],
    })
    half = len(pages) // 2
    pq.write_table(table.slice(0, half), directory / "part-00000.parquet")
    pq.write_table(table.slice(half), directory / "part-00001.parquet")
    return {p.url: p for p in pages}


def fetch_log(out: Path) -> pa.Table:
    parts = sorted((out / "crawl").glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts]).sort_by("url_norm")


def ok_payloads(out: Path) -> dict[str, bytes]:
    log = fetch_log(out)
    payloads = {}
    for row in log.filter(pa.compute.equal(log["outcome"], "ok")).to_pylist():
        with open(out / "crawl" / row["warc_file"], "rb") as f:
            f.seek(row["warc_offset"])
            record = next(iter(ArchiveIterator(f)))
            assert record.rec_type == "response"
            assert record.rec_headers.get_header("WARC-Target-URI") == row["final_url"]
            payloads[row["url"]] = record.content_stream().read()
    return payloads


def warc_records(out: Path) -> list[tuple[str, str, str]]:
    """Every record of the crawl's WARCs as (type, target URI, digest of what was archived), sorted: what must not
    depend on timing (dates, record ids and order do)."""
    records = []
    for warc in sorted((out / "crawl").glob("*.warc.gz")):
        with open(warc, "rb") as f:
            for r in ArchiveIterator(f):
                headers = r.rec_headers
                digest = headers.get_header("WARC-Payload-Digest") or headers.get_header("WARC-Block-Digest")
                records.append((r.rec_type, r.rec_headers.get_header("WARC-Target-URI"), digest))
    return sorted(records)


# --- pages and WARCs (extract) ----------------------------------------------------------------------------------


SENTENCES = [
    "The city council met on Tuesday evening to discuss the budget for the public library.",
    "Several residents spoke about the opening hours and the lack of new books for children.",
    "The mayor promised that a decision would be taken before the end of the summer.",
    "Local businesses have offered to sponsor a reading programme for the long school holidays.",
    "Critics say the plan does not address the poor state of the building's heating system.",
]


def article(title: str, paragraphs: list[str], charset: str | None = None) -> str:
    meta = f'<meta charset="{charset}">' if charset else ""
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (f"<!DOCTYPE html><html><head>{meta}<title>{title}</title></head><body>"
            f"<nav><a href='/'>Home</a> | <a href='/about'>About us</a></nav>"
            f"<article><h1>{title}</h1>{body}</article>"
            f"<footer>Copyright 2019 The Example Gazette. All rights reserved.</footer></body></html>")


def story(i: int) -> bytes:
    paragraphs = [f"Story number {i}. " + " ".join(SENTENCES[(i + k) % 5] for k in range(4)) for _ in range(3)]
    return article(f"Story {i}", paragraphs).encode()


def warc_record(url: str, body: bytes, status: str = "200 OK", content_type: str = "text/html; charset=utf-8",
                gzipped: bool = True) -> bytes:
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=gzipped)
    http = StatusAndHeaders(status, [("Content-Type", content_type)], protocol="HTTP/1.1")
    writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http))
    return buffer.getvalue()


def write_warc(path: Path, records: list[bytes]) -> list[int]:
    """Concatenate records into a file; returns their offsets."""
    offsets, position = [], 0
    with open(path, "wb") as f:
        for record in records:
            offsets.append(position)
            f.write(record)
            position += len(record)
    return offsets


BAD_HTTP = gzip.compress(b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: http://e.com/bad-http\r\n"
                         b"Content-Type: application/http; msgtype=response\r\nContent-Length: 17\r\n\r\n"
                         b"NOT AN HTTP REPLY\r\n\r\n")


def crawl_dir(root: Path) -> tuple[Path, dict]:
    """A crawl-like directory: two WARC parts and their fetch logs, with every kind of bad record."""
    crawl = root / "crawl"
    crawl.mkdir(parents=True)
    latin = article("Déjà vu", ["Un café à la française, s'il vous plaît, dit Gérard. " * 8], charset="iso-8859-1")
    part0 = [
        warc_record("http://e.com/0", story(0)),
        warc_record("http://e.com/404", story(1), status="404 Not Found"),
        warc_record("http://e.com/img.png", b"\x89PNG....", content_type="image/png"),
        warc_record("http://e.com/empty", b"<html><body></body></html>"),
        warc_record("http://fr.e.com/latin", latin.encode("latin-1"), content_type="text/html"),
        BAD_HTTP,
    ]
    part1 = [warc_record("http://e.com/2", story(2)), warc_record("http://e.com/3", story(3))[:300],
             warc_record("http://e.com/4", story(4))]
    lineage = {}
    # part 0's log is named like the crawl's (part-00000.parquet) and joins by offset; part 1's has no offsets
    # (another crawler's log) and joins by URL
    urls = [["http://e.com/0", "http://e.com/404", "http://e.com/img.png", "http://e.com/empty",
             "http://fr.e.com/latin", "http://e.com/bad-http"], ["http://e.com/2", "http://e.com/3", "http://e.com/4"]]
    for n, records in enumerate([part0, part1]):
        name = f"part-{n:05d}.warc.gz"
        offsets = write_warc(crawl / name, records)
        rows = {"url": [], "final_url": [], "status": [], "score_max": [], "subreddits": []}
        for k, offset in enumerate(offsets):
            rows["url"].append(urls[n][k].replace("http://", "HTTP://") if n else urls[n][k])  # url as submitted
            rows["final_url"].append(urls[n][k])
            rows["status"].append(200)
            rows["score_max"].append(10 * n + k + 3)
            rows["subreddits"].append([f"sub{n}{k}"])
            lineage[(name, offset)] = (10 * n + k + 3, [f"sub{n}{k}"])
        if n == 0:
            rows["warc_file"], rows["warc_offset"] = [name] * len(offsets), offsets
        pq.write_table(pa.table(rows), crawl / (f"part-{n:05d}.parquet" if n == 0 else "other-log.parquet"))
    return crawl, lineage


# --- documents (filter, tokenize) -------------------------------------------------------------------------------


PROSE = [
    "The river had risen during the night, and by morning the low fields near the village were under water.",
    "Farmers moved their animals to the higher ground while the children watched from the old stone bridge.",
    "In the afternoon the mayor came down with two engineers to look at the damage to the road.",
    "They agreed that the drainage channels had not been cleaned for years and that this was the cause.",
    "Work to repair them will start next week, and the cost will be shared with the regional government.",
    "Some residents said they had warned the council about the problem more than once in the past.",
]


def prose(n_sentences: int = 12, seed: int = 0) -> str:
    rng = random.Random(seed)
    sentences = [rng.choice(PROSE) for _ in range(n_sentences)]
    return "\n".join(" ".join(sentences[i : i + 2]) for i in range(0, n_sentences, 2))


def doc_row(i: int, text: str, **fields) -> dict:
    row = {"doc_id": f"d{i:05d}", "url": f"http://site{i % 7}.org/{i}", "host": f"site{i % 7}.org", "title": None,
           "text": text, "date": None, "lang": "en", "lang_score": 0.99, "n_chars": len(text),
           "n_words": len(text.split()), "score": 3, "subreddits": ["news"], "warc_file": "part-00000.warc.gz",
           "warc_offset": i}
    row.update(fields)
    return row


def write_docs(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=DOC_SCHEMA), path)
    return path


def mixed_docs() -> list[dict]:
    french = ("Le conseil municipal s'est réuni mardi soir pour discuter du budget de la bibliothèque. " * 10)
    return [
        doc_row(0, prose(12, 0)),
        doc_row(1, prose(12, 1)),
        doc_row(2, french, lang="fr", lang_score=0.98),
        doc_row(3, prose(2, 2)),  # under 128 tokens
        doc_row(4, prose(12, 4) + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit sed do eiusmod."),
        doc_row(5, french, lang=None, lang_score=None),  # detected here
        doc_row(6, prose(12, 6), lang=None, lang_score=None),
    ]


def make_docs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    words = ["the", "river", "stone", "light", "garden", "winter", "paper", "signal", "harbor", "quiet", "café",
             "1999", "isn't", "—", "東京", "\n\n"]
    return [(f"doc-{seed}-{i:04d}", " ".join(rng.choice(words) for _ in range(rng.randint(3, 60))))
            for i in range(n)]


def write_parts(directory: Path, docs: list[tuple[str, str | None]], n_parts: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for p in range(n_parts):
        chunk = docs[p::n_parts]
        pq.write_table(pa.table({"doc_id": pa.array([d for d, _ in chunk], pa.string()),
                                 "text": pa.array([t for _, t in chunk], pa.string()),
                                 "score": pa.array(range(len(chunk)), pa.int64())}),
                       directory / f"part-{p:05d}.parquet")
    return directory


# --- token shards, training and fine-tuning configs -------------------------------------------------------------


def steps_per_epoch(loader) -> int:
    """Global steps a training loader serves per epoch (its sampler drops the remainder of B x W)."""
    return loader.sampler.n_items // loader.sampler.global_batch


def write_shard(path: Path, tokens: np.ndarray) -> Path:
    """One shard in the tokenize stage's format (pipeline/shards.py): the llm.c header, then uint16 tokens."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(shard_header(len(tokens)))
        f.write(np.asarray(tokens, dtype="<u2").tobytes())
    return path


def write_token_dataset(root: Path, vocab_size: int = 512, n_train: int = 3, tokens_per_shard: int = 20_000,
                        n_val_tokens: int = 8_000, seed: int = 0) -> dict[str, list[str]]:
    """Shards of a learnable token stream (a noisy repeating pattern, so loss falls fast) under root/."""
    rng = np.random.default_rng(seed)
    pattern = rng.integers(0, vocab_size, size=97)

    def stream(n: int) -> np.ndarray:
        tokens = np.resize(pattern, n)
        noise = rng.random(n) < 0.1
        tokens[noise] = rng.integers(0, vocab_size, size=int(noise.sum()))
        return tokens

    train = [str(write_shard(root / f"part-train-{i:05d}.bin", stream(tokens_per_shard))) for i in range(n_train)]
    val = [str(write_shard(root / "part-val-00000.bin", stream(n_val_tokens)))]
    return {"train": train, "val": val}


def gpt2_encoding(shared_dir: Path):
    """tiktoken's GPT-2 encoding built offline from OpenAI's files (../shared/FACTS.md)."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(shared_dir / "vocab.bpe"),
                                            encoder_json_file=str(shared_dir / "encoder.json"))
    pat = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    return tiktoken.Encoding("gpt2", pat_str=pat, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})


def set_dotted(config: dict, overrides: dict) -> None:
    """Set `a.b.c`-style keys in a nested config dict, making the levels on the way."""
    for key, value in overrides.items():
        node = config
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value


def tiny_config(data: dict[str, list[str]], out_dir, **overrides) -> dict:
    """A TrainConfig dict for a 2-layer, 64-wide model on a 512-token vocabulary: a step takes milliseconds."""
    config = {
        "out_dir": str(out_dir), "max_steps": 8, "seed": 7, "precision": "fp32",
        "model": {"size": "tiny", "block_size": 32, "vocab_size": 512, "pad_vocab_to": 64},
        "data": {"train": data["train"], "val": data["val"]},
        "batch": {"seq_len": 32, "micro_batch_size": 4, "grad_accum_steps": 1},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "weight_decay": 0.1, "grad_clip": 1.0},
        "zero": {"stage": 0},
        "checkpoint": {"every": 4, "keep_last": 2},
        "eval": {"every": 4, "batches": 2},
        "log": {"every": 1, "tensorboard": False},
        "launch": {"launcher": "local", "num_workers": 1},
    }
    set_dotted(config, overrides)
    return config


def run_tiny(data: dict[str, list[str]], out_dir, **overrides) -> dict:
    """Launch a `tiny_config` run (its launcher, in this process or as its ranks) and return its summary."""
    from training.config import TrainConfig
    from training.launch import launch

    return launch(TrainConfig.model_validate(tiny_config(data, out_dir, **overrides)))


def parse_transcript(template, text: str) -> list[dict]:
    """Messages back from a dialogue the template rendered: the inverse of the template on valid messages."""
    from training.finetune_data import ROLES, FinetuneDataError

    messages, rest = [], text
    headers = {template.header(r): r for r in ROLES}
    while rest:
        role = next((r for h, r in headers.items() if rest.startswith(h)), None)
        if role is None:
            raise FinetuneDataError(f"transcript: expected a role header at {rest[:40]!r}")
        rest = rest[len(template.header(role)):]
        end = template.end_of_turn if role == "assistant" else template.turn_separator
        if role != "assistant":
            # a system/user turn ends at the separator that precedes the next header
            cut = min((rest.find(template.turn_separator + h) for h in headers if
                       rest.find(template.turn_separator + h) >= 0), default=-1)
            if cut < 0:
                if not rest.endswith(end):
                    raise FinetuneDataError(f"transcript: unterminated {role} turn")
                cut = len(rest) - len(end)
        else:
            cut = rest.find(end)
            if cut < 0:
                raise FinetuneDataError("transcript: assistant turn without end-of-turn marker")
        messages.append({"role": role, "content": rest[:cut]})
        rest = rest[cut + len(end):]
    return messages


COLORS = ["red", "blue", "green", "yellow", "black", "white", "pink", "brown", "orange", "gray"]


OBJECTS = ["ball", "cup", "car", "hat", "door", "book", "shoe", "kite", "lamp", "boat", "chair", "bag"]


def qa_records() -> list[dict]:
    """Every (object, colour) pair: the answer is in the context, so held-out pairs can be answered by a model
    that learned to read it, not by one that memorised the training pairs."""
    records = [{"context": f"The {o} is {c}.", "question": f"What color is the {o}?", "answer": c}
               for o in OBJECTS for c in COLORS]
    random.Random(0).shuffle(records)
    return records


def write_jsonl(path, records):
    """Records as JSON lines; returns the path as a string (for a command line)."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def write_config(path, out_dir, **overrides):
    """A fine-tuning config file for the tiny model on the QA set (`qa_records`); dotted keys override."""
    config = {
        "out_dir": str(out_dir), "max_steps": 130, "seed": 1, "precision": "fp32",
        "model": {"size": "tiny", "block_size": 64, "pad_vocab_to": 64},
        "batch": {"seq_len": 24, "micro_batch_size": 16, "grad_accum_steps": 1},
        # constant rate after warmup: the schedule does not depend on max_steps, so runs of different length
        # agree step for step (the resume test relies on it)
        "optim": {"lr": 5e-3, "warmup_steps": 10, "min_lr_ratio": 1.0, "weight_decay": 0.0, "grad_clip": 1.0},
        "zero": {"stage": 0},
        "checkpoint": {"every": 0, "keep_last": 2},
        "eval": {"every": 0, "batches": 3},
        "log": {"every": 10, "tensorboard": False},
        # one thread: on a shared 2-core machine two threads per rank were 4x slower per step
        "launch": {"launcher": "local", "threads_per_worker": 1},
        "finetune": {"val_fraction": 0.2, "max_new_tokens": 4},
    }
    set_dotted(config, overrides)
    import yaml

    path.write_text(yaml.safe_dump(config))
    return str(path)


# --- a small stage for runner tests ---------------------------------------------------------------------------

class CountConfig(Config):
    lose_one: bool = False
    tag: str = ""  # changes the plan, nothing else
    delay: float = 0  # seconds each task that does not fail waits before it writes


class CountLines(Stage):
    """Keeps lines with text, rejects blank ones; miscounts when told to."""

    name = "count"

    def plan(self, inputs):
        return [Phase("parts", self.run_task, list(inputs))]

    def run_task(self, file, ctx):
        with file.open() as f:
            lines = f.read().decode().splitlines()
        ctx.count("in", len(lines) + (1 if self.config.lose_one else 0))
        kept = [line for line in lines if line.strip()]
        ctx.write_part(pa.table({"line": pa.array(kept, pa.string())}))
        ctx.reject(pa.table({"reason": ["blank"] * (len(lines) - len(kept))}))


class CountLinesFailingOnB(CountLines):
    """The same stage (same name, config and so plan) but a task that fails on b.txt, like a crash would."""

    def run_task(self, file, ctx):
        if file.uri.endswith("b.txt"):
            raise StageError(f"{file.uri}: refused")
        super().run_task(file, ctx)


class CountLinesFailingOn(CountLines):
    """Fails on the input named by its tag (like a crash would); with `kill-` before the name, its process dies."""

    def run_task(self, file, ctx):
        if file.uri.endswith(self.config.tag.removeprefix("kill-")):
            if self.config.tag.startswith("kill-"):
                os.kill(os.getpid(), signal.SIGKILL)
            raise StageError(f"{file.uri}: refused")
        time.sleep(self.config.delay)
        super().run_task(file, ctx)


def count_inputs(tmp_path: Path) -> Path:
    """Two text inputs for the Count stages (a.txt with a blank line, b.txt) and a file the inputs skip."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.txt").write_text("one\n\ntwo\n")
    (root / "b.txt").write_text("three\n")
    (root / "_ignored.txt").write_text("not an input\n")
    return root


def documents(n: int, seed: int = 0) -> pa.Table:
    words = ["river", "stone", "light", "garden", "winter", "paper", "signal", "harbor", "quiet", "morning"]
    rows = [{**dict.fromkeys(DOC_SCHEMA.names), "doc_id": f"d{seed}-{i}", "score": i,
             "text": " ".join(words[(i * 7 + k * 3 + seed) % len(words)] for k in range(40 + i))}
            for i in range(n)]
    return pa.Table.from_pylist(rows, schema=DOC_SCHEMA)


def docs_dir(root: Path) -> Path:
    docs = root / "docs"
    docs.mkdir()
    pq.write_table(documents(20), docs / "part-00000.parquet")
    return docs
