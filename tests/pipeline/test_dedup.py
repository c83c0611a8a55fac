"""The dedup stage on planted duplicate families: recall and precision against brute force, keeper rule,
reasons naming the kept document, clusters, funnel, determinism across buckets, workers and runs, the CLI."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.fixtures.dupgen import planted_corpus, shingle_set, true_pairs, write_parts
from pipeline.config import ConfigError, load_config
from pipeline.dedup import DedupConfig, DedupStage
from pipeline.documents import DOC_SCHEMA
from pipeline.runner import RunOptions, run_stage
from pipeline.storage import expand_inputs

LOCAL = RunOptions(executor="local", quiet=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rows = planted_corpus(n_families=40, n_singletons=120, seed=3)
    docs = tmp_path_factory.mktemp("dedup") / "docs"
    write_parts(rows, docs, 3)
    return rows, docs


def run_dedup(docs: Path, out: Path, options: RunOptions = LOCAL, **config):
    return run_stage(DedupStage(DedupConfig(**config)), expand_inputs([str(docs)]), str(out), options)


def kept_ids(out: Path) -> list[str]:
    return [d for p in sorted((out / "dedup").glob("part-*.parquet")) for d in pq.read_table(p)["doc_id"].to_pylist()]


def rejected(out: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted((out / "dedup" / "_rejected").glob("*.parquet")))


def clusters(out: Path) -> list[dict]:
    return pq.read_table(out / "dedup" / "_clusters" / "clusters.parquet").to_pylist()


def test_recall_and_precision_against_brute_force(corpus, tmp_path):
    rows, docs = corpus
    config = DedupConfig()
    result = run_dedup(docs, tmp_path / "out", RunOptions(executor="local", quiet=True, keep_work=True))
    cluster_of = {c["doc_id"]: c["cluster_id"] for c in clusters(tmp_path / "out")}
    truth = true_pairs(rows, config.threshold)
    for minimum in (config.threshold, 0.8):
        wanted = [pair for pair, j in truth.items() if j >= minimum]
        found = [p for p in wanted if p[0] in cluster_of and cluster_of[p[0]] == cluster_of.get(p[1])]
        assert len(wanted) > 40 and len(found) / len(wanted) >= 0.95, (minimum, len(found), len(wanted))
    # precision of the verified edges, recomputed here with the independent shingle sets
    by_id = {r["doc_id"]: r for r in rows}
    edges = pa.concat_tables(pq.read_table(p) for p in (tmp_path / "out" / "dedup" / "_work").glob("verify-*/edges.parquet"))
    side = pa.concat_tables(pq.read_table(p) for p in (tmp_path / "out" / "dedup" / "_work").glob("signatures-*/docs.parquet"))
    id_of = dict(zip(side["doc_key"].to_pylist(), side["doc_id"].to_pylist()))
    good = 0
    for a, b in zip(edges["a"].to_pylist(), edges["b"].to_pylist()):
        x, y = shingle_set(by_id[id_of[a]]["text"]), shingle_set(by_id[id_of[b]]["text"])
        good += len(x & y) / len(x | y) >= config.threshold
    assert edges.num_rows > 0 and good / edges.num_rows >= 0.99
    assert result.funnel["in"] == len(rows)


def truth_components(rows: list[dict], threshold: float) -> dict[str, int]:
    """Per family, how many documents it keeps if every pair at or above the threshold is found."""
    parent = {r["doc_id"]: r["doc_id"] for r in rows}

    def root(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for x, y in true_pairs(rows, threshold):
        parent[root(x)] = root(y)
    roots = defaultdict(set)
    for r in rows:
        roots[r["family"]].add(root(r["doc_id"]))
    return {family: len(r) for family, r in roots.items()}


def test_families_collapse_and_boilerplate_pages_stay(corpus, tmp_path):
    rows, docs = corpus
    run_dedup(docs, tmp_path / "out")
    kept = set(kept_ids(tmp_path / "out"))
    family_of = {r["doc_id"]: r["family"] for r in rows}
    per_family = Counter(family_of[d] for d in kept)
    expected = truth_components(rows, DedupConfig().threshold)
    # the base, its exact copy, the 2 % and usually the 5 % edit (Jaccard about 0.8 and 0.6) become one document;
    # the 10 % and 30 % edits (about 0.4 and 0.1) differ enough to stay
    assert Counter(expected[f] for f in expected if f.startswith("f")).most_common(1)[0][0] == 3
    assert all(per_family[f] >= expected[f] for f in expected)  # verified clusters never merge too much
    exact_families = [f for f in expected if per_family[f] == expected[f]]
    assert len(exact_families) >= 0.95 * len(expected)
    assert all(per_family[f] == 1 for f in expected if not f.startswith("f"))  # singletons, boilerplate pages
    reasons = Counter(rejected(tmp_path / "out")["reason"].to_pylist())
    assert set(reasons) == {"exact_duplicate", "near_duplicate"}
    assert sum(reasons.values()) == len(rows) - len(kept)


def test_keeper_is_highest_karma_then_earliest_then_doc_id(corpus, tmp_path):
    rows, docs = corpus
    result = run_dedup(docs, tmp_path / "out")
    by_id = {r["doc_id"]: r for r in rows}
    members = defaultdict(list)
    for c in clusters(tmp_path / "out"):
        members[c["cluster_id"]].append(c)
    assert len(members) == result.funnel["clusters"] == 40
    for cluster_id, group in members.items():
        best = min(group, key=lambda c: (-(c["score"] if c["score"] is not None else -(2**62)),
                                         c["date"] is None, c["date"] or "", c["doc_id"]))
        assert best["doc_id"] == cluster_id and best["keeper"] and sum(c["keeper"] for c in group) == 1
        assert all(c["cluster_size"] == len(group) for c in group)
    kept = set(kept_ids(tmp_path / "out"))
    dropped = rejected(tmp_path / "out").to_pylist()
    for doc in dropped:
        assert doc["duplicate_of"] in kept and doc["duplicate_of"] != doc["doc_id"]
        assert doc["text"] == by_id[doc["doc_id"]]["text"]  # the whole document is kept
        if doc["reason"] == "exact_duplicate":
            assert shingle_set(doc["text"]) == shingle_set(by_id[doc["duplicate_of"]]["text"])
    funnel = result.funnel
    assert funnel["in"] == funnel["out"] + funnel["rejected:exact_duplicate"] + funnel["rejected:near_duplicate"]


def test_same_result_for_any_bucket_count_and_across_runs(corpus, tmp_path):
    _, docs = corpus
    run_dedup(docs, tmp_path / "a", num_buckets=1)
    run_dedup(docs, tmp_path / "b", num_buckets=5)
    run_dedup(docs, tmp_path / "c", num_buckets=5)
    assert kept_ids(tmp_path / "a") == kept_ids(tmp_path / "b") == kept_ids(tmp_path / "c")
    assert clusters(tmp_path / "a") == clusters(tmp_path / "b")
    for p in sorted((tmp_path / "b" / "dedup").glob("part-*.parquet")):
        assert pq.read_table(p).equals(pq.read_table(tmp_path / "c" / "dedup" / p.name))


def test_exact_only_and_empty_texts(tmp_path):
    rows = [{**dict.fromkeys(DOC_SCHEMA.names), "doc_id": f"d{i}", "text": t, "score": s}
            for i, (t, s) in enumerate([("", 1), ("", 2), ("Same words here.", 1), ("same, WORDS here!", 9),
                                         ("Different.", 1)])]
    (tmp_path / "docs").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=DOC_SCHEMA), tmp_path / "docs" / "part-00000.parquet")
    result = run_dedup(tmp_path / "docs", tmp_path / "out", near=False)
    assert kept_ids(tmp_path / "out") == ["d1", "d3", "d4"]  # empty texts are duplicates of each other too
    assert dict(zip(*(rejected(tmp_path / "out")[c].to_pylist() for c in ("doc_id", "duplicate_of")))) == {
        "d0": "d1", "d2": "d3"}
    assert result.funnel["rejected:exact_duplicate"] == 2


def test_config_is_checked():
    with pytest.raises(ConfigError, match="exceeds num_perm"):
        load_config(DedupConfig, None, ["bands=40", "rows=4"])


def test_cli_matches_the_runner(corpus, tmp_path, capsys):
    from jobs.cli import main

    _, docs = corpus
    run_dedup(docs, tmp_path / "local")
    assert main(["dedup", "--docs", str(docs), "--out", str(tmp_path / "cli"), "--executor", "local",
                 "--set", "num_buckets=2"]) == 0
    assert "rejected:near_duplicate" in capsys.readouterr().out
    assert kept_ids(tmp_path / "cli") == kept_ids(tmp_path / "local")
    manifest = json.loads((tmp_path / "cli" / "dedup" / "_manifest.json").read_text())
    assert manifest["config"]["num_buckets"] == 2


def test_no_duplicates_and_an_empty_part(tmp_path):
    rows = planted_corpus(n_families=0, n_singletons=30, seed=9)
    write_parts(rows, tmp_path / "docs", 2)
    pq.write_table(DOC_SCHEMA.empty_table(), tmp_path / "docs" / "part-00002.parquet")
    result = run_dedup(tmp_path / "docs", tmp_path / "out")
    assert sorted(kept_ids(tmp_path / "out")) == sorted(r["doc_id"] for r in rows)
    assert clusters(tmp_path / "out") == [] and result.funnel["in"] == result.funnel["out"] == 30
    assert not (tmp_path / "out" / "dedup" / "_rejected").exists() or not list((tmp_path / "out" / "dedup" / "_rejected").glob("*"))


# --- a user's own Parquet ----------------------------------------------------------------------------------------


def test_own_parquet_needs_only_doc_id_and_text_and_keeps_its_types(tmp_path):
    from datetime import datetime

    story = "The council met on Tuesday to talk about the library budget and the new opening hours for readers."
    table = pa.table({
        "doc_id": ["late", "early", "other", "undated"],
        "text": [story, story.upper(), "Something else entirely, about the weather in the hills.", story],
        "date": pa.array([datetime(2021, 5, 1), datetime(2019, 1, 2, 3, 4), datetime(2020, 1, 1), None],
                         pa.timestamp("ms")),
        "source": pa.array([7, 8, 9, 10], pa.int16()),
    })
    (tmp_path / "docs").mkdir()
    pq.write_table(table, tmp_path / "docs" / "mine.parquet")
    result = run_dedup(tmp_path / "docs", tmp_path / "out")
    [part] = sorted((tmp_path / "out" / "dedup").glob("part-*.parquet"))
    kept = pq.read_table(part)
    assert kept.schema.equals(table.schema)  # no column added, dropped or converted
    assert kept["doc_id"].to_pylist() == ["early", "other"]  # no score: the earliest date wins, undated last
    assert kept.equals(table.take([1, 2]))
    gone = rejected(tmp_path / "out")
    assert gone.schema.names == ["reason", "duplicate_of", "cluster_size", *table.schema.names]
    assert gone.schema.field("date").type == pa.timestamp("ms")
    assert sorted(gone["doc_id"].to_pylist()) == ["late", "undated"]
    assert set(gone["duplicate_of"].to_pylist()) == {"early"}
    assert result.funnel["rejected:exact_duplicate"] == 2


def test_float_scores_are_floored_for_the_keeper_rule(tmp_path):
    text = "Identical words in both of these documents, which differ only in their karma and their id."
    (tmp_path / "docs").mkdir()
    pq.write_table(pa.table({"doc_id": ["a", "b"], "text": [text, text], "score": [3.2, 4.9]}),
                   tmp_path / "docs" / "x.parquet")
    run_dedup(tmp_path / "docs", tmp_path / "out")
    assert kept_ids(tmp_path / "out") == ["b"]


def test_texts_without_word_characters_are_compared_by_their_exact_text(tmp_path):
    texts = ["🙂🙂🙂", "→ → →", "🙂🙂🙂", "!!! ???", "🎉", "🙂 🙂🙂"]
    (tmp_path / "docs").mkdir()
    pq.write_table(pa.table({"doc_id": [f"d{i}" for i in range(len(texts))], "text": texts}),
                   tmp_path / "docs" / "x.parquet")
    result = run_dedup(tmp_path / "docs", tmp_path / "out")
    assert kept_ids(tmp_path / "out") == ["d0", "d1", "d3", "d4", "d5"]
    assert dict(zip(*(rejected(tmp_path / "out")[c].to_pylist() for c in ("doc_id", "duplicate_of")))) == {"d2": "d0"}
    assert result.funnel["rejected:exact_duplicate"] == 1


@pytest.mark.parametrize("table,message", [
    (pa.table({"doc_id": ["a"], "body": ["no text column"]}),
     r"mine.parquet: not a document table: missing column text"),
    (pa.table({"text": ["no id"]}), r"mine.parquet: not a document table: missing column doc_id"),
    (pa.table({"doc_id": ["a"], "text": ["x"], "score": ["high"]}), r"mine.parquet: column score has type string"),
    (None, r"mine.parquet: not a readable Parquet file"),
    (pa.table({"doc_id": ["a"], "text": ["x"], "reason": ["mine"]}), r"mine.parquet: column reason has the name of"),
])
def test_unusable_parquet_fails_the_plan_naming_file_and_column(tmp_path, table, message):
    from pipeline.runner import StageError

    (tmp_path / "docs").mkdir()
    path = tmp_path / "docs" / "mine.parquet"
    if table is None:
        path.write_bytes(b"this is not parquet" * 10)
    else:
        pq.write_table(table, path)
    inputs = expand_inputs([str(tmp_path / "docs")])
    with pytest.raises(StageError, match=message):
        DedupStage(DedupConfig()).plan(inputs)
    with pytest.raises(StageError, match=message):
        run_dedup(tmp_path / "docs", tmp_path / "out")
