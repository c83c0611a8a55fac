"""The tokenize stage: shards read back by an independent reader, split stability, shuffle, rejects, resume, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.runner import RunOptions, StageError, run_stage
from pipeline.storage import expand_inputs
from pipeline.tokenize import TokenizeConfig, TokenizeStage, order_keys, split_of
from pipeline.tokenizer import gpt2_encoding
from tests.helpers import make_docs, shared_data, write_parts

EOT = 50256


def run(docs_dir: Path, out: Path, executor: str = "local", keep_work: bool = False, **config) -> dict:
    stage = TokenizeStage(TokenizeConfig(**{"shard_tokens": 1000, "val_fraction": 0.2, **config}))
    options = RunOptions(executor=executor, quiet=True, keep_work=keep_work)
    result = run_stage(stage, expand_inputs([str(docs_dir)]), str(out), options)
    return result.manifest


def read_shard_independently(path: Path) -> np.ndarray:
    """The llm.c reader, written out: 256 int32 header (magic, version, count), then uint16 tokens."""
    raw = path.read_bytes()
    header = np.frombuffer(raw[:1024], dtype="<i4")
    assert header[0] == 20240520 and header[1] == 1 and not header[3:].any()
    tokens = np.frombuffer(raw[1024:], dtype="<u2")
    assert tokens.size == header[2]
    return tokens


def split_tokens(out: Path, split: str) -> tuple[dict, np.ndarray]:
    index = json.loads((out / "tokenize" / "index.json").read_text())
    shards = [read_shard_independently(out / "tokenize" / s["name"]) for s in index["splits"][split]["shards"]]
    return index, np.concatenate(shards) if shards else np.zeros(0, np.uint16)


def documents_in(tokens: np.ndarray) -> list[str]:
    """Decode a split's stream: every document starts with <|endoftext|>."""
    assert tokens.size == 0 or tokens[0] == EOT
    cuts = np.flatnonzero(tokens == EOT)
    bounds = list(cuts) + [tokens.size]
    return [gpt2_encoding().decode(tokens[a + 1 : b].tolist()) for a, b in zip(bounds[:-1], bounds[1:])]


def test_split_is_a_property_of_the_doc_id():
    ids = [f"id-{i}" for i in range(20_000)]
    splits = split_of(ids, 0.1)
    assert 0.09 < splits.count("val") / len(ids) < 0.11
    assert split_of(ids[5000:7000], 0.1) == splits[5000:7000]  # other documents do not move a document
    assert split_of(["x", "y"] + ids[:100], 0.1)[2:] == splits[:100]
    assert set(split_of(ids[:1000], 0.0)) == {"train"}


def test_order_keys_depend_on_the_seed_only():
    ids = [f"id-{i}" for i in range(1000)]
    assert (order_keys(ids, 1) == order_keys(ids, 1)).all()
    assert (order_keys(ids[::-1], 1) == order_keys(ids, 1)[::-1]).all()
    assert (order_keys(ids, 1) != order_keys(ids, 2)).mean() > 0.99


def test_shards_hold_every_document_once_in_the_seeded_order(tmp_path):
    docs = make_docs(300)
    manifest = run(write_parts(tmp_path / "docs", docs, 3), tmp_path / "out")
    n_val = split_of([d for d, _ in docs], 0.2).count("val")
    assert manifest["funnel"] == {"in": 300, "out": 300, "split:train": 300 - n_val, "split:val": n_val}
    texts = dict(docs)
    seen = []
    for split in ("train", "val"):
        index, tokens = split_tokens(tmp_path / "out", split)
        shards = index["splits"][split]["shards"]
        assert all(s["tokens"] == 1000 for s in shards[:-1]) and 0 < shards[-1]["tokens"] <= 1000
        assert index["splits"][split]["tokens"] == tokens.size == sum(s["tokens"] for s in shards)
        assert sum(s["docs"] for s in shards) == index["splits"][split]["docs"]
        ids = [d for d, _ in docs if split_of([d], 0.2)[0] == split]
        expected_order = sorted(ids, key=lambda d: (int(order_keys([d], 1337)[0]), d))
        assert documents_in(tokens) == [texts[d] for d in expected_order]
        assert expected_order != ids  # shuffled, not input order
        seen += expected_order
    assert sorted(seen) == sorted(texts)
    assert index["tokenizer"]["name"] == "gpt2" and index["tokenizer"]["eot"] == EOT
    assert index["format"]["magic"] == 20240520 and index["seed"] == 1337
    assert {p["name"] for p in manifest["parts"]} == {s["name"] for sp in ("train", "val")
                                                      for s in index["splits"][sp]["shards"]}


def test_output_does_not_depend_on_how_the_input_is_partitioned(tmp_path):
    docs = make_docs(200, seed=1)
    run(write_parts(tmp_path / "one", docs, 1), tmp_path / "a")
    run(write_parts(tmp_path / "four", docs, 4), tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a" / "tokenize").glob("part-*.bin"))
    assert names and names == sorted(p.name for p in (tmp_path / "b" / "tokenize").glob("part-*.bin"))
    for name in names:
        assert (tmp_path / "a/tokenize" / name).read_bytes() == (tmp_path / "b/tokenize" / name).read_bytes()


def test_added_documents_keep_split_and_relative_order(tmp_path):
    docs = make_docs(150, seed=2)
    run(write_parts(tmp_path / "old", docs, 2), tmp_path / "a")
    run(write_parts(tmp_path / "new", docs + make_docs(100, seed=3), 2), tmp_path / "b")
    for split in ("train", "val"):
        old = documents_in(split_tokens(tmp_path / "a", split)[1])
        new = documents_in(split_tokens(tmp_path / "b", split)[1])
        old_texts = set(old)
        assert [t for t in new if t in old_texts] == old


def test_documents_without_text_or_id_are_rejected_with_the_reason(tmp_path):
    docs = make_docs(40, seed=4) + [("doc-empty", ""), ("doc-null", None), (None, "text with no id")]
    manifest = run(write_parts(tmp_path / "docs", docs, 2), tmp_path / "out")
    funnel = manifest["funnel"]
    assert {k: v for k, v in funnel.items() if not k.startswith("split:")} == {
        "in": 43, "out": 40, "rejected:empty_text": 2, "rejected:no_doc_id": 1}
    assert funnel["split:train"] + funnel["split:val"] == 40
    rejected = pa.concat_tables([pq.read_table(p) for p in (tmp_path / "out/tokenize/_rejected").glob("*.parquet")])
    assert sorted(zip(rejected["reason"].to_pylist(), rejected["doc_id"].to_pylist()), key=str) == sorted(
        [("empty_text", "doc-empty"), ("empty_text", "doc-null"), ("no_doc_id", None)], key=str)


def test_a_killed_shard_task_is_redone_identically(tmp_path):
    docs_dir = write_parts(tmp_path / "docs", make_docs(200, seed=5), 2)
    run(docs_dir, tmp_path / "out", keep_work=True)  # as a kill in the last phase leaves it: earlier phases' files
    stage_dir = tmp_path / "out" / "tokenize"
    before = {p.name: p.read_bytes() for p in stage_dir.glob("part-*.bin")}
    marker = json.loads((stage_dir / "_tasks" / "shards-00001.json").read_text())
    for name in marker["files"]:
        (stage_dir / name).unlink()
    (stage_dir / "_tasks" / "shards-00001.json").unlink()
    (stage_dir / "_manifest.json").unlink()
    run(docs_dir, tmp_path / "out")
    assert {p.name: p.read_bytes() for p in stage_dir.glob("part-*.bin")} == before


def test_prose_through_the_stage_equals_tiktoken_on_each_document(tmp_path):
    lines = [line for line in shared_data("prose", "lee_background.cor").read_text().splitlines() if line.strip()]
    docs = [(f"lee-{i}", line) for i, line in enumerate(lines)]
    run(write_parts(tmp_path / "docs", docs, 2), tmp_path / "out", shard_tokens=20_000, val_fraction=0.0)
    _, tokens = split_tokens(tmp_path / "out", "train")
    order = sorted(docs, key=lambda d: (int(order_keys([d[0]], 1337)[0]), d[0]))
    expected = np.concatenate([[EOT, *gpt2_encoding().encode_ordinary(text)] for _, text in order])
    assert (tokens == expected).all()
    assert tokens.size == 72_299 + len(docs)  # the shared README's count, line by line, plus one EOT each


def test_trained_bpe_shards_record_their_tokenizer(tmp_path):
    from pipeline.storage import sha256_file
    from pipeline.tokenizer import bpe_tokenizer

    docs = make_docs(200, seed=6)
    run(write_parts(tmp_path / "docs", docs, 2), tmp_path / "out", val_fraction=0.0,
        tokenizer={"kind": "bpe", "vocab_size": 600})
    stage_dir = tmp_path / "out" / "tokenize"
    tokenizer = bpe_tokenizer(stage_dir / "tokenizer.json")
    index, tokens = split_tokens(tmp_path / "out", "train")
    assert index["tokenizer"]["name"] == tokenizer.name and index["tokenizer"]["kind"] == "bpe"
    assert 257 < tokenizer.n_vocab <= 600  # bytes + <|endoftext|> + merges, as many as this small corpus allows
    assert index["tokenizer"]["hash"] == sha256_file(stage_dir / "tokenizer.json")[:16]
    cuts = list(np.flatnonzero(tokens == tokenizer.eot)) + [tokens.size]
    decoded = {tokenizer.decode(tokens[a + 1 : b].tolist()) for a, b in zip(cuts[:-1], cuts[1:])}
    assert decoded == {t for _, t in docs}


def test_unreadable_or_foreign_inputs_are_named(tmp_path):
    docs_dir = write_parts(tmp_path / "docs", make_docs(5), 1)
    (docs_dir / "part-00001.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(StageError, match="part-00001.parquet: not a readable Parquet file"):
        run(docs_dir, tmp_path / "out")
    (docs_dir / "part-00001.parquet").unlink()
    pq.write_table(pa.table({"id": ["a"], "body": ["b"]}), docs_dir / "part-00002.parquet")
    with pytest.raises(StageError, match="part-00002.parquet: not a document table: missing columns doc_id, text"):
        run(docs_dir, tmp_path / "out2")
    with pytest.raises(StageError, match="part-00002.parquet: not a document table"):  # when the stage plans
        TokenizeStage(TokenizeConfig()).plan(expand_inputs([str(docs_dir)]))


def test_a_vocabulary_that_cannot_be_checked_is_a_stage_error(tmp_path):
    with pytest.raises(StageError, match="GPT-2 vocabulary incomplete: no encoder.json and no vocab.bpe"):
        run(write_parts(tmp_path / "docs", make_docs(5), 1), tmp_path / "out", tokenizer={"path": str(tmp_path)})


@pytest.mark.slow
def test_cli_on_ray_then_loader_reads_the_index(tmp_path, ray_session, capsys):
    from jobs.cli import main
    from training.data import TokenWindows

    docs_dir = write_parts(tmp_path / "docs", make_docs(300, seed=7), 3)
    out = tmp_path / "out"
    args = ["tokenize", "--docs", str(docs_dir), "--out", str(out), "--set", "shard_tokens=2000",
            "--set", "val_fraction=0.1"]
    assert main(args) == 0
    assert "tokenize" in capsys.readouterr().out
    local = tmp_path / "local"
    run(docs_dir, local, shard_tokens=2000, val_fraction=0.1)
    for path in (out / "tokenize").glob("part-*.bin"):
        assert path.read_bytes() == (local / "tokenize" / path.name).read_bytes()
    loader = TokenWindows(out / "tokenize", batch_size=2, seq_len=32, split="val")
    x, y = loader.next_batch()
    assert x.shape == (2, 32) and (x[:, 1:] == y[:, :-1]).all()
    assert main(args) == 0  # up to date: skipped
    assert "skipped" in capsys.readouterr().out


def test_modded_nanogpt_reader_loads_our_shards(tmp_path):
    """modded-nanogpt's `_load_data_shard`, as it is written there (less pin_memory, which needs a GPU)."""
    import torch

    run(write_parts(tmp_path / "docs", make_docs(100, seed=8), 1), tmp_path / "out", val_fraction=0.0)
    for file in sorted((tmp_path / "out" / "tokenize").glob("part-train-*.bin")):
        header = torch.from_file(str(file), False, 256, dtype=torch.int32)
        assert header[0] == 20240520, "magic number mismatch in the data .bin file"
        assert header[1] == 1, "unsupported version"
        num_tokens = int(header[2])
        with file.open("rb", buffering=0) as f:
            tokens = torch.empty(num_tokens, dtype=torch.uint16)
            f.seek(256 * 4)
            nbytes = f.readinto(tokens.numpy())
            assert nbytes == 2 * num_tokens, "number of tokens read does not match header"
        assert (tokens.numpy() == read_shard_independently(file)).all()
