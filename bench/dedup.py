"""MinHash signatures/s vs datasketch's per-shingle loop; dedup recall/precision against brute force; docs/s, memory.

1. Signatures: pipeline.minhash.MinHasher (vectorised, bit-identical to datasketch) against the naive loop
   `MinHash(); for shingle: m.update(shingle)` (datasketch defaults: sha1 shingle hash), plus `update_batch` and
   `MinHash.bulk` for reference, on the same planted documents, one core, shingling included in all; median of 3.
   Where the time goes: each step of MinHasher alone (shingle spans, xxh32, sha1, permutations and minima), as
   the naive loop's time over the step's.
2. Quality of the defaults: on planted duplicate families (exact copies; 2, 5, 10, 30 % word edits; pages sharing
   only boilerplate), recall of the pairs at or above Jaccard 0.8 and at or above the configured threshold (pairs
   ending in one cluster), and precision of the verified edges, against brute-force Jaccard; for the defaults and
   two alternatives, with the number of candidate pairs each costs.
3. End to end: the stage on one core (executor local) over 4 parts, docs/s and peak RSS in a child process.
Rates are per CPU-second of the measuring process (the machine is shared; wall time would measure neighbours).
Ends with RESULT lines (see DESIGN.md).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stage_child import run_child  # noqa: E402  (bench/, beside this script)

REPEATS = 3
N_SIGNATURE_DOCS = 3000
N_NAIVE_DOCS = 300


def signature_rates(texts: list[str]) -> dict[str, float]:
    from datasketch import MinHash

    from pipeline.minhash import MinHasher, word_shingles

    from pipeline.minhash import sha1_spans, shingle_spans, xxh32_spans

    rates: dict[str, list[float]] = {"ours_xxh32": [], "ours_sha1": [], "naive_update": [], "update_batch": [],
                                     "bulk": []}
    buffer, starts, lengths, offsets = shingle_spans(texts)
    hashes = xxh32_spans(buffer, starts, lengths)
    steps = {"step_shingle_spans": lambda: shingle_spans(texts),
             "step_xxh32_spans": lambda: xxh32_spans(buffer, starts, lengths),
             "step_sha1_spans": lambda: sha1_spans(buffer, starts, lengths),
             "step_permute_min": lambda: MinHasher().signatures_flat(hashes, offsets)}
    rates.update({name: [] for name in steps})
    for _ in range(REPEATS):
        for name, step in steps.items():
            t = time.process_time()
            step()
            rates[name].append(len(texts) / (time.process_time() - t))
        for name, hasher in (("ours_xxh32", MinHasher()), ("ours_sha1", MinHasher(shingle_hash="sha1"))):
            t = time.process_time()
            hasher.signatures_of_texts(texts)
            rates[name].append(len(texts) / (time.process_time() - t))
        few = texts[:N_NAIVE_DOCS]
        t = time.process_time()
        for text in few:
            m = MinHash()
            for shingle in word_shingles(text):
                m.update(shingle)
        rates["naive_update"].append(len(few) / (time.process_time() - t))
        t = time.process_time()
        for text in few:
            MinHash().update_batch(word_shingles(text))
        rates["update_batch"].append(len(few) / (time.process_time() - t))
        t = time.process_time()
        MinHash.bulk([word_shingles(text) for text in few])
        rates["bulk"].append(len(few) / (time.process_time() - t))
    return {k: statistics.median(v) for k, v in rates.items()}


def quality(planted: list[dict], docs: Path, out: Path, **config) -> dict:
    import pyarrow.parquet as pq

    from jobs.fixtures.dupgen import true_pairs
    from pipeline.dedup import DedupConfig, DedupStage
    from pipeline.runner import RunOptions, run_stage
    from pipeline.storage import expand_inputs

    cfg = DedupConfig(**config)
    result = run_stage(DedupStage(cfg), expand_inputs([str(docs)]), str(out),
                       RunOptions(executor="local", quiet=True, force=True, keep_work=True))
    cluster = {c["doc_id"]: c["cluster_id"] for c in pq.read_table(out / "dedup" / "_clusters" / "clusters.parquet").to_pylist()}
    truth = true_pairs(planted, min(cfg.threshold, 0.8))
    report = {"candidates": result.funnel.get("candidate_pairs", 0)}
    for name, minimum in (("recall_08", 0.8), ("recall_threshold", cfg.threshold)):
        wanted = [p for p, j in truth.items() if j >= minimum]
        found = sum(1 for x, y in wanted if x in cluster and cluster[x] == cluster.get(y))
        report[name] = found / max(len(wanted), 1)
    # precision: verified edges whose brute-force Jaccard is at least the threshold
    verified = result.funnel.get("verified_pairs", 0)
    exact_truth = {p for p, j in truth.items() if j >= cfg.threshold}
    import pyarrow as pa

    from pipeline.runner import work_files

    edges = pa.concat_tables(pq.read_table(p) for p in work_files(str(out / "dedup"), "verify", "edges.parquet"))
    side = pa.concat_tables(pq.read_table(p, columns=["doc_key", "doc_id"])
                            for p in work_files(str(out / "dedup"), "signatures", "docs.parquet"))
    id_of = dict(zip(side["doc_key"].to_pylist(), side["doc_id"].to_pylist()))
    good = sum(1 for a, b in zip(edges["a"].to_pylist(), edges["b"].to_pylist())
               if tuple(sorted((id_of[a], id_of[b]))) in exact_truth)
    report["precision"] = good / max(verified, 1)
    return report


def main() -> None:
    from jobs.fixtures.dupgen import planted_corpus, write_parts

    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        tmp = Path(tmp)
        rows = planted_corpus(n_families=300, n_singletons=2000, seed=11)
        texts = [r["text"] for r in rows][:N_SIGNATURE_DOCS]
        rates = signature_rates(texts)
        print(f"signatures/s on {len(texts)} documents (median of {REPEATS}, one core, shingling included), "
              f"and x the naive loop:")
        for name, rate in rates.items():
            print(f"  {name:<20} {rate:>11,.0f}  {rate / rates['naive_update']:7.1f}x")

        write_parts(rows, tmp / "docs", 4)
        print(f"\nquality on {len(rows)} planted documents (300 families, 2000 singletons):")
        configs = {"default (t=0.5, 32x4)": {}, "t=0.8, 16x8": {"threshold": 0.8, "bands": 16, "rows": 8},
                   "t=0.5, 16x8": {"bands": 16, "rows": 8}}
        reports = {}
        for label, config in configs.items():
            reports[label] = q = quality(rows, tmp / "docs", tmp / f"q{len(reports)}", **config)
            print(f"  {label:<22} recall J>=0.8 {q['recall_08']:.3f}  recall J>=t {q['recall_threshold']:.3f}  "
                  f"precision {q['precision']:.3f}  candidates {q['candidates']:,}")

        big = planted_corpus(n_families=1500, n_singletons=10_000, seed=12)
        write_parts(big, tmp / "big", 4)
        runs = [run_child({"stage": "dedup", "inputs": [str(tmp / "big")], "out": str(tmp / "e2e")})
                for _ in range(REPEATS)]
        docs_per_s = statistics.median(len(big) / r["cpu_s"] for r in runs)
        peak = max(r["peak_rss"] for r in runs) / 2**20
        print(f"\nend to end: {len(big):,} documents, 4 parts, one core: {docs_per_s:,.0f} docs/s, peak {peak:.0f} MB")
        print(f"  funnel {runs[0]['funnel']}")

    default = reports["default (t=0.5, 32x4)"]
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"RESULT minhash_vs_datasketch_loop={rates['ours_xxh32'] / rates['naive_update']:.1f} goal>=20")
    print(f"RESULT minhash_sha1_vs_datasketch_loop={rates['ours_sha1'] / rates['naive_update']:.1f} goal>=10")
    print(f"RESULT dedup_recall_j08={default['recall_08']:.3f} goal>=0.95")
    print(f"RESULT dedup_recall_threshold={default['recall_threshold']:.3f} goal>=0.95")
    print(f"RESULT dedup_precision={default['precision']:.3f} goal>=0.99")
    print(f"RESULT dedup_docs_per_s={docs_per_s:.0f} goal>=1000")
    print(f"RESULT dedup_peak_mb={peak:.0f} goal<=2000")


if __name__ == "__main__":
    main()
