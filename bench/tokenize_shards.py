"""MB/s of the tokenize stage vs bare tiktoken `encode_ordinary_batch`, and windows/s of the training loader.

Stage: the whole `tokenize` run (Parquet read, split, GPT-2 encode, work files, global shuffle into shards,
index) over about 24 MB of real prose (../shared/data/prose, repeated with new doc_ids; generated words if absent),
against bare `encode_ordinary_batch` on the same texts at the same thread count (1, then 2), in the same run,
median of 3. Loader: `TokenWindows.next_batch()` for B=32, T=1024 from 4 shards of 64M tokens, against bare
`np.memmap` random windows; the goal is 100x what a GPT-2-small step consumes on one GPU (H100, bf16, 50% MFU).
Ends with RESULT lines (see DESIGN.md).
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

TARGET_MB = 24
N_PARTS = 4
REPEATS = 3
B, T = 32, 1024
LOADER_TOKENS = 64_000_000
# GPT-2 small on one H100: 6N + 12*L*d*T FLOP per token (N=124M, L=12, d=768, T=1024), 989 TFLOP/s bf16 at 50%.
GPT2_SMALL_FLOP_PER_TOKEN = 6 * 124e6 + 12 * 12 * 768 * 1024
GPU_TOKENS_PER_S = 989e12 * 0.5 / GPT2_SMALL_FLOP_PER_TOKEN


def corpus() -> list[str]:
    prose = REPO.parent / "shared" / "data" / "prose"
    if prose.exists():
        docs = [line for line in (prose / "lee_background.cor").read_text().splitlines() if line.strip()]
        hamlet = (prose / "hamlet_gut.txt").read_text(encoding="utf-8").split("\n\n")
        docs += ["\n\n".join(hamlet[i : i + 20]) for i in range(0, len(hamlet), 20)]
    else:
        rng = random.Random(0)
        words = [w for w in __doc__.split() if w.isalpha()]
        docs = [" ".join(rng.choice(words) for _ in range(rng.randint(50, 800))) for _ in range(500)]
    texts, size = [], 0
    while size < TARGET_MB * 1e6:
        for doc in docs:
            texts.append(doc)
            size += len(doc.encode())
    return texts


def bench_stage(tmp: Path, texts: list[str]) -> dict[int, tuple[float, float]]:
    from pipeline.runner import RunOptions, run_stage
    from pipeline.storage import expand_inputs
    from pipeline.tokenize import TokenizeConfig, TokenizeStage
    from pipeline.tokenizer import gpt2_encoding

    docs_dir = tmp / "docs"
    docs_dir.mkdir()
    for p in range(N_PARTS):
        chunk = texts[p::N_PARTS]
        pq.write_table(pa.table({"doc_id": [f"d{p}-{i}" for i in range(len(chunk))], "text": chunk}),
                       docs_dir / f"part-{p:05d}.parquet")
    inputs = expand_inputs([str(docs_dir)])
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    encoding = gpt2_encoding()
    results = {}
    for threads in (1, 2):
        stage = TokenizeStage(TokenizeConfig(threads=threads, shard_tokens=2_000_000))
        bare, ours = [], []
        for _ in range(REPEATS):
            t = time.perf_counter()
            n_bare = sum(len(ids) for ids in encoding.encode_ordinary_batch(texts, num_threads=threads))
            bare.append(megabytes / (time.perf_counter() - t))
            t = time.perf_counter()
            result = run_stage(stage, inputs, str(tmp / "out"), RunOptions(executor="local", quiet=True, force=True))
            ours.append(megabytes / (time.perf_counter() - t))
            splits = json.loads((tmp / "out" / "tokenize" / "index.json").read_text())["splits"]
            assert result.funnel["out"] == len(texts)
            assert sum(s["tokens"] for s in splits.values()) == n_bare + len(texts)  # + one <|endoftext|> each
            print(f"  threads={threads}: bare {bare[-1]:.1f} MB/s   stage {ours[-1]:.1f} MB/s")
        results[threads] = (statistics.median(bare), statistics.median(ours))
    print(f"text: {len(texts):,} documents, {megabytes:.1f} MB")
    return results


def bench_loader(tmp: Path) -> tuple[float, float]:
    from pipeline.shards import shard_header
    from training.data import TokenWindows

    rng = np.random.default_rng(0)
    paths = []
    per_shard = LOADER_TOKENS // 4
    for k in range(4):
        path = tmp / f"part-train-{k:05d}.bin"
        with open(path, "wb") as f:
            f.write(shard_header(per_shard))
            f.write(rng.integers(0, 50257, per_shard, dtype=np.uint16).tobytes())
        paths.append(path)

    loader = TokenWindows(paths, B, T, seed=0)
    for _ in range(20):
        loader.next_batch()
    ours = []
    for _ in range(REPEATS):
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < 2:
            loader.next_batch()
            n += B
        ours.append(n / (time.perf_counter() - t))

    memmap = np.memmap(paths[0], dtype=np.uint16, mode="r", offset=1024)
    bare = []
    for _ in range(REPEATS):
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < 2:
            starts = rng.integers(0, memmap.size - T - 1, B)
            np.stack([memmap[s : s + T + 1] for s in starts]).astype(np.int64)
            n += B
        bare.append(n / (time.perf_counter() - t))
    return statistics.median(bare), statistics.median(ours)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-tokenize-") as tmp:
        tmp = Path(tmp)
        stage = bench_stage(tmp, corpus())
        bare_windows, our_windows = bench_loader(tmp)
    gpu_windows = GPU_TOKENS_PER_S / T
    print(f"loader: {our_windows:,.0f} windows/s (bare memmap {bare_windows:,.0f}); "
          f"one GPU's GPT-2-small step consumes about {gpu_windows:,.0f} windows/s")
    for threads, (bare, ours) in stage.items():
        print(f"RESULT tokenize_mb_per_s_{threads}t={ours:.1f}")
        print(f"RESULT bare_encode_mb_per_s_{threads}t={bare:.1f}")
        print(f"RESULT tokenize_vs_bare_{threads}t={ours / bare:.2f} goal>=0.8")
    print(f"RESULT loader_windows_per_s={our_windows:.0f} goal>={100 * gpu_windows:.0f}")
    print(f"RESULT loader_vs_bare_memmap={our_windows / bare_windows:.2f}")


if __name__ == "__main__":
    main()
