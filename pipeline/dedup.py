"""The `dedup` stage: documents -> one document per cluster of exact or near duplicates.

Exact duplicates share a hash of the normalised text (lower case, words only). Near duplicates: datasketch-
compatible MinHash over word 5-grams (pipeline/minhash.py, OpenWebText's shingles), LSH banding, every candidate
pair verified by the exact Jaccard similarity of the two shingle sets, connected components over the verified
edges, and one keeper per component: the highest karma (`score`), then the earliest `date`, then the smallest
`doc_id`. The choice depends on the documents only, so 1 worker and N workers keep the same ones. Every dropped
document goes to `_rejected/` with `duplicate_of` (the keeper's doc_id); `_clusters/` lists each cluster.

Input: any Parquet documents with `doc_id` and `text` (string columns); `score` (integer, or float: floored) and
`date` (string, date or timestamp; compared as ISO text) are used by the keeper rule when present. Every column
comes out as it came in, types included. The files and columns are checked when the stage plans.

Phases (P input parts, S shuffle buckets, B bands), each a list of independent runner tasks, on Ray or locally:
1. `signatures` (P tasks): per document its exact key, shingle hashes and signature; writes a side table
   (doc_key, doc_id, score, date, exact key, shingle hashes) and the shuffle: one row (band, band key, doc_key)
   per band (band -1 holds the exact key) into S bucket files chosen by the band key: a shuffle on (band, hash).
2. `candidates` (S tasks): gathers bucket s from every part, groups rows by (band, key), and emits candidate
   pairs: the whole group when it has at most `max_group` members, else each member with its next `window`
   members in doc_key order (so a band shared by boilerplate-only pages cannot explode quadratically); pairs are
   written by the part of their first document.
3. `verify` (P tasks): the distinct pairs whose first document lives in part p; loads the shingles of part p and
   only the needed rows of the other parts, computes exact Jaccard, keeps pairs >= `threshold` (or exact).
4. `components` (1 task): connected components of the verified edges by hook-and-compress label propagation in
   numpy, the keeper of each, the `_clusters/` table and the drop list. Memory: O(E + V_dup) 8-byte integers for
   E verified edges and V_dup documents with at least one edge, plus three small columns of those documents;
   it does not grow with documents that have no duplicate.
5. `write` (P tasks): part p minus its dropped documents; the dropped ones to `_rejected/`.

Memory is not flat in the input, by design, in two places (bench/scale.py measures the stage at 1x-16x):
`components` grows with the documents that have a duplicate (above), and a `candidates` task holds one shuffle
bucket, which grows with the input until there is more than one bucket (`bucket_bytes`: 256 MB of text). The
other phases hold one part, or one batch of it, at a time.

How this handles 10^8 documents on a cluster (about 1 TB of text in some 2,000 parts of 50k documents):
- Measured here (bench/dedup.py, one core, all five phases): about 4,000 docs/s end to end on 20k planted
  documents, of which signatures run at about 8,000 docs/s; peak RSS about 330-700 MB.
- `signatures` is embarrassingly parallel: 10^8 documents are ~3.5 core-hours of signatures and ~7 core-hours
  for the whole stage, about 20 minutes on 20 nodes of 16 cores. The side tables hold the shingle hashes
  (4 bytes per shingle, about the size of the text), ~1 TB on shared storage; the shuffle is (B+1) rows of
  18 bytes per document, ~60 GB for B = 32.
- S = one bucket per 256 MB of input (about 4,000) keeps a `candidates` task at ~15 MB of shuffle rows; the
  shuffle is P x S files (8M small files at this scale): raise `bucket_bytes` so S stays near a few hundred,
  which bounds a task at (rows of the stage) / S and the file count at P x S.
- A `verify` task holds its part's shingles (~500 MB for 50k documents) plus the rows it needs from other parts;
  the number of pairs grows with the number of true duplicates, not with N^2, because band groups larger than
  `max_group` (pages sharing boilerplate, templates) become chains of `window` neighbours.
- `components` holds only documents that have a verified duplicate: at a 30 % duplicate rate, 3x10^7 nodes and
  about as many edges, roughly 1 GB of int64 arrays in one task, independent of the documents without
  duplicates. Beyond one node's memory the same step runs distributed as iterated large-star / small-star
  label propagation over edge partitions (Kiveris et al. 2014), of which this hook-and-compress is the
  single-task form; the keeper rule is unchanged.
- `write` is parallel per part and reads only its slice of the drop list (by doc_key range).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field, model_validator

from pipeline.config import Config
from pipeline.documents import CORE_COLUMNS, TEXT_TYPES, check_documents, read_documents
from pipeline.layout import CLUSTERS
from pipeline.minhash import MinHasher, band_keys, words
from pipeline.records import Rows
from pipeline.runner import Phase, Stage, StageError, TaskContext
from pipeline.storage import InputFile

EXACT_BAND = -1
SIDE_SCHEMA = pa.schema([
    ("doc_key", pa.int64()), ("doc_id", pa.string()), ("score", pa.int64()), ("date", pa.string()),
    ("exact_key", pa.uint64()), ("shingles", pa.list_(pa.uint32())),
])
SHUFFLE_SCHEMA = pa.schema([("band", pa.int16()), ("key", pa.uint64()), ("doc_key", pa.int64())])
PAIR_SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.int64()), ("exact", pa.bool_())])
EDGE_SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.int64()), ("jaccard", pa.float32()), ("exact", pa.bool_())])
DROP_SCHEMA = pa.schema([
    ("doc_key", pa.int64()), ("reason", pa.string()), ("duplicate_of", pa.string()), ("cluster_size", pa.int64()),
])
CLUSTER_SCHEMA = pa.schema([
    ("cluster_id", pa.string()), ("doc_id", pa.string()), ("keeper", pa.bool_()), ("score", pa.int64()),
    ("date", pa.string()), ("cluster_size", pa.int64()),
])
REJECT_FIELDS = [("reason", pa.string()), ("duplicate_of", pa.string()), ("cluster_size", pa.int64())]
# What dedup reads: doc_id and text are required; score and date feed the keeper rule when present (no score:
# lowest karma; no date: after every dated document); every other column is passed through as it is.
COLUMN_TYPES = {
    "doc_id": TEXT_TYPES,
    "text": TEXT_TYPES,
    "score": (pa.types.is_integer, pa.types.is_floating),
    "date": (*TEXT_TYPES, pa.types.is_date, pa.types.is_timestamp),
}
# the phases whose files later phases read, and those files (in the work area)
SIGNATURES, CANDIDATES, VERIFY, COMPONENTS = "signatures", "candidates", "verify", "components"
SIDE_NAME, EDGES_NAME, DROPPED_NAME = "docs.parquet", "edges.parquet", "dropped.parquet"


class DedupConfig(Config):
    """Exact and near-duplicate removal; the defaults are measured in bench/dedup.py (see the report there)."""

    exact: bool = True
    near: bool = True
    ngram: int = Field(5, ge=1, description="word n-gram shingles (OpenWebText: 5)")
    num_perm: int = Field(128, ge=1)
    bands: int = Field(32, ge=1, description="LSH bands")
    rows: int = Field(4, ge=1, description="signature values per band; bands x rows <= num_perm")
    seed: int = 1
    scheme: Literal["affine32", "legacy"] = Field("affine32", description="datasketch's permutation scheme")
    shingle_hash: Literal["xxh32", "sha1"] = Field("xxh32", description="sha1: datasketch's default, 5x slower")
    threshold: float = Field(0.5, gt=0, le=1, description="a candidate pair is a duplicate at this Jaccard "
                             "(OpenWebText's; a 5 % word edit gives about 0.6, a 10 % edit about 0.4)")
    max_group: int = Field(64, ge=2, description="band groups up to this size give all their pairs")
    window: int = Field(8, ge=1, description="larger groups: each member paired with its next `window` members")
    num_buckets: int | None = Field(None, ge=1, description="shuffle buckets; None: one per `bucket_bytes`")
    bucket_bytes: int = Field(256 << 20, ge=1, description="input bytes per automatic shuffle bucket")
    batch_docs: int = Field(4096, ge=1, description="documents per signature batch")

    @model_validator(mode="after")
    def _bands_fit(self) -> DedupConfig:
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self


def normalised_text(text: str) -> str:
    return " ".join(words(text))


def exact_key(text: str) -> int:
    """The hash of the normalised text; a text with no word characters (only emoji, arrows, punctuation) has an
    empty normalised text and is keyed by its exact text instead, so such documents are not all one another's
    duplicates."""
    normal = normalised_text(text)
    return xxhash.xxh3_64_intdigest(normal.encode() if normal else b"\0exact\0" + text.encode("utf-8", "replace"))


def exact_keys(texts: list[str]) -> np.ndarray:
    return np.fromiter((exact_key(t) for t in texts), dtype=np.uint64, count=len(texts))


def keeper_columns(table: pa.Table) -> tuple[pa.Array, pa.Array]:
    """`score` as int64 (floats floored) and `date` as text that sorts by time, nulls where a column is absent."""
    n = table.num_rows
    score = table["score"] if "score" in table.column_names else pa.nulls(n, pa.int64())
    if pa.types.is_floating(score.type):
        score = pc.floor(score)
    date = table["date"] if "date" in table.column_names else pa.nulls(n, pa.string())
    return pc.cast(score, pa.int64(), safe=False), pc.cast(date, pa.string())


def doc_key(part: int, row: int) -> int:
    """A document's place: its input part in the high 32 bits, its row in the low 32 (dense, sortable)."""
    return (part << 32) | row


def part_of(keys: np.ndarray) -> np.ndarray:
    return keys >> 32


def bucket_of(band: np.ndarray, key: np.ndarray, num_buckets: int) -> np.ndarray:
    mixed = key ^ (band.astype(np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    return (mixed % np.uint64(num_buckets)).astype(np.int64)


def _list_array(arrays: list[np.ndarray]) -> pa.Array:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    values = np.concatenate(arrays) if arrays else np.zeros(0, np.uint32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.astype(np.uint32), pa.uint32()))


def group_pairs(members: list[int], max_group: int, window: int) -> Iterator[tuple[int, int]]:
    """Candidate pairs (a, b), a < b, of one band group of sorted doc keys: all of them in a group of at most
    `max_group`, else each member with its next `window` members (a chain, still connected, linear in size)."""
    reach = len(members) if len(members) <= max_group else window + 1
    for i, a in enumerate(members):
        for b in members[i + 1 : i + reach]:
            yield a, b


def connected_components(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Component label (the smallest node index in it) of each of n nodes, from edges a[i]-b[i].

    Hook-and-compress: hook each edge's larger root under the smaller, then jump pointers to the root, until
    every edge joins nodes of the same label. Deterministic; O(n + E) memory; a few rounds in practice.
    """
    label = np.arange(n, dtype=np.int64)
    while True:
        la, lb = label[a], label[b]
        differ = la != lb
        if not differ.any():
            return label
        lo, hi = np.minimum(la[differ], lb[differ]), np.maximum(la[differ], lb[differ])
        np.minimum.at(label, hi, lo)
        while True:
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped


@dataclass(frozen=True)
class SignaturesTask:
    """Part `part` (the input `file`): its side table, and its shuffle rows into `buckets` files."""

    part: int
    file: InputFile
    buckets: int


@dataclass(frozen=True)
class CandidatesTask:
    """Bucket `bucket` of each of the `parts` signature tasks -> candidate pairs, one file per part."""

    bucket: int
    parts: int


@dataclass(frozen=True)
class VerifyTask:
    """The candidate pairs of part `part` from each of the `buckets` candidate tasks -> verified edges."""

    part: int
    buckets: int


@dataclass(frozen=True)
class ComponentsTask:
    """The verified edges of each of the `parts` verify tasks -> clusters and the drop list."""

    parts: int


@dataclass(frozen=True)
class WriteTask:
    """Part `part` (the input `file`) minus its dropped documents."""

    part: int
    file: InputFile


class DedupStage(Stage):
    name = "dedup"
    version = 2  # 2: texts without word characters keyed by their exact text; input columns kept as they are

    config: DedupConfig

    def num_buckets(self, inputs: list[InputFile]) -> int:
        if self.config.num_buckets is not None:
            return self.config.num_buckets
        return max(1, -(-sum(f.size for f in inputs) // self.config.bucket_bytes))

    def plan(self, inputs: list[InputFile]) -> list[Phase]:
        docs = [f for f in inputs if f.name.endswith(".parquet")]
        if not docs:
            raise StageError("dedup: no document Parquet files among the inputs")
        if len(docs) >= 1 << 31:
            raise StageError("dedup: too many input parts")
        check_documents(docs, CORE_COLUMNS, COLUMN_TYPES, reserved=tuple(n for n, _ in REJECT_FIELDS))
        parts, buckets = len(docs), self.num_buckets(docs)
        return [
            Phase(SIGNATURES, self.signatures, [SignaturesTask(p, file, buckets) for p, file in enumerate(docs)]),
            Phase(CANDIDATES, self.candidates, [CandidatesTask(bucket, parts) for bucket in range(buckets)]),
            Phase(VERIFY, self.verify, [VerifyTask(p, buckets) for p in range(parts)]),
            Phase(COMPONENTS, self.components, [ComponentsTask(parts)]),
            Phase("write", self.write, [WriteTask(p, file) for p, file in enumerate(docs)]),
        ]

    # -- 1. signatures --------------------------------------------------------------------------------------------

    def signatures(self, task: SignaturesTask, ctx: TaskContext) -> None:
        part, file, n_buckets = task.part, task.file, task.buckets
        c = self.config
        table = read_documents(file, CORE_COLUMNS)
        score, date = keeper_columns(table)
        table = pa.table({"doc_id": pc.cast(table["doc_id"], pa.string()), "score": score, "date": date,
                          "text": table["text"]})
        hasher = MinHasher(c.num_perm, c.seed, c.scheme, c.shingle_hash)
        side_batches, shuffle = [], []
        for start in range(0, max(table.num_rows, 1), c.batch_docs):
            batch = table.slice(start, c.batch_docs)
            if batch.num_rows == 0:
                break
            texts = [t or "" for t in batch["text"].to_pylist()]
            keys = np.array([doc_key(part, start + i) for i in range(batch.num_rows)], dtype=np.int64)
            shingles = [np.unique(h) for h in hasher.shingle_hashes(texts, c.ngram)]
            exact = exact_keys(texts)
            side_batches.append(pa.Table.from_arrays(
                [pa.array(keys), batch["doc_id"], batch["score"], batch["date"], pa.array(exact, pa.uint64()),
                 _list_array(shingles)], schema=SIDE_SCHEMA))
            if c.exact:
                shuffle.append((np.full(len(keys), EXACT_BAND, np.int16), exact, keys))
            if c.near:
                has_shingles = np.array([len(s) > 0 for s in shingles])
                signatures = hasher.signatures([s for s, ok in zip(shingles, has_shingles) if ok])
                bands = band_keys(signatures, c.bands, c.rows)  # (docs with shingles, bands)
                near_keys = keys[has_shingles]
                shuffle.append((np.tile(np.arange(c.bands, dtype=np.int16), len(near_keys)), bands.reshape(-1),
                                np.repeat(near_keys, c.bands)))
        side = pa.concat_tables(side_batches) if side_batches else SIDE_SCHEMA.empty_table()
        ctx.write_table(ctx.work_name(SIDE_NAME), side)
        bands = np.concatenate([s[0] for s in shuffle]) if shuffle else np.zeros(0, np.int16)
        band_keys_ = np.concatenate([s[1] for s in shuffle]) if shuffle else np.zeros(0, np.uint64)
        owners = np.concatenate([s[2] for s in shuffle]) if shuffle else np.zeros(0, np.int64)
        buckets = bucket_of(bands, band_keys_, n_buckets)
        order = np.argsort(buckets, kind="stable")
        bounds = np.searchsorted(buckets[order], np.arange(n_buckets + 1))
        for bucket in range(n_buckets):
            rows = order[bounds[bucket] : bounds[bucket + 1]]
            ctx.write_table(ctx.work_name(_bucket_name(bucket)), pa.Table.from_arrays(
                [pa.array(bands[rows]), pa.array(band_keys_[rows]), pa.array(owners[rows])], schema=SHUFFLE_SCHEMA))
        ctx.count("signatures", len(side))

    # -- 2. candidates --------------------------------------------------------------------------------------------

    def candidates(self, task: CandidatesTask, ctx: TaskContext) -> None:
        n_parts = task.parts
        tables = [ctx.read_work(SIGNATURES, p, _bucket_name(task.bucket)) for p in range(n_parts)]
        rows = pa.concat_tables(tables).sort_by([("band", "ascending"), ("key", "ascending"), ("doc_key", "ascending")])
        band, key, docs = (rows[c].to_numpy() for c in ("band", "key", "doc_key"))
        boundary = np.ones(len(docs), dtype=bool)
        boundary[1:] = (band[1:] != band[:-1]) | (key[1:] != key[:-1])
        starts = np.flatnonzero(boundary)
        sizes = np.diff(np.append(starts, len(docs)))
        ends = np.append(starts[1:], len(docs))
        pairs: dict[tuple[int, int], bool] = {}  # (a, b) -> joined by the exact key
        for start, end in zip(starts[sizes > 1].tolist(), ends[sizes > 1].tolist()):
            members = docs[start:end].tolist()
            if band[start] == EXACT_BAND:  # identical normalised texts: a star joins them, nothing to verify
                for other in members[1:]:
                    pairs[(members[0], other)] = True
            else:
                for pair in group_pairs(members, self.config.max_group, self.config.window):
                    pairs.setdefault(pair, False)
        a = np.fromiter((p[0] for p in pairs), dtype=np.int64, count=len(pairs))
        b = np.fromiter((p[1] for p in pairs), dtype=np.int64, count=len(pairs))
        exact = np.fromiter(pairs.values(), dtype=bool, count=len(pairs))
        owner = part_of(a)
        for p in range(n_parts):
            mine = owner == p
            ctx.write_table(ctx.work_name(_pairs_name(p)), pa.Table.from_arrays(
                [pa.array(a[mine]), pa.array(b[mine]), pa.array(exact[mine])], schema=PAIR_SCHEMA))
        ctx.count("candidate_pairs", len(pairs))

    # -- 3. verify ------------------------------------------------------------------------------------------------

    def verify(self, task: VerifyTask, ctx: TaskContext) -> None:
        tables = [ctx.read_work(CANDIDATES, s, _pairs_name(task.part)) for s in range(task.buckets)]
        pairs = pa.concat_tables(tables)
        if pairs.num_rows:
            pairs = pairs.group_by(["a", "b"], use_threads=False).aggregate([("exact", "max")])
            pairs = pairs.rename_columns(["a", "b", "exact"]).sort_by([("a", "ascending"), ("b", "ascending")])
        a, b = pairs["a"].to_numpy(), pairs["b"].to_numpy()
        exact = pairs["exact"].to_numpy(zero_copy_only=False).astype(bool)
        needed = np.unique(np.concatenate([a, b[~exact]]))
        shingles: dict[int, np.ndarray] = {}
        for q in np.unique(part_of(needed)).tolist():
            side = ctx.read_work(SIGNATURES, q, SIDE_NAME, columns=["doc_key", "shingles"])
            side = side.filter(pc.is_in(side["doc_key"], value_set=pa.array(needed[part_of(needed) == q])))
            values = side["shingles"].combine_chunks()
            flat, offsets = values.values.to_numpy(), values.offsets.to_numpy()
            for i, k in enumerate(side["doc_key"].to_pylist()):
                shingles[k] = flat[offsets[i] : offsets[i + 1]]
        similarity = np.ones(len(a), dtype=np.float32)
        for i in np.flatnonzero(~exact).tolist():
            x, y = shingles[int(a[i])], shingles[int(b[i])]
            inter = len(np.intersect1d(x, y, assume_unique=True))
            union = len(x) + len(y) - inter
            similarity[i] = inter / union if union else 1.0
        keep = exact | (similarity >= self.config.threshold)
        ctx.write_table(ctx.work_name(EDGES_NAME), pa.Table.from_arrays(
            [pa.array(a[keep]), pa.array(b[keep]), pa.array(similarity[keep]), pa.array(exact[keep])],
            schema=EDGE_SCHEMA))
        ctx.count("verified_pairs", int(keep.sum()))
        ctx.count("unverified_pairs", int((~keep).sum()))

    # -- 4. components --------------------------------------------------------------------------------------------

    def components(self, task: ComponentsTask, ctx: TaskContext) -> None:
        edges = pa.concat_tables([ctx.read_work(VERIFY, p, EDGES_NAME) for p in range(task.parts)]).select(["a", "b"])
        ends = np.concatenate([edges["a"].to_numpy(), edges["b"].to_numpy()])
        nodes = np.unique(ends)  # sorted doc keys of every document with a verified duplicate
        a, b = np.searchsorted(nodes, edges["a"].to_numpy()), np.searchsorted(nodes, edges["b"].to_numpy())
        del ends, edges
        label = connected_components(a, b, len(nodes))
        columns = ["doc_key", "doc_id", "score", "date", "exact_key"]
        info = []
        for q in np.unique(part_of(nodes)).tolist():  # one part at a time: only its duplicated rows are kept
            side = ctx.read_work(SIGNATURES, q, SIDE_NAME, columns=columns)
            info.append(side.filter(pc.is_in(side["doc_key"], value_set=pa.array(nodes[part_of(nodes) == q]))))
        meta = (pa.concat_tables(info) if info else SIDE_SCHEMA.empty_table().select(columns)).sort_by("doc_key")
        score = pc.fill_null(meta["score"], np.iinfo(np.int64).min + 1).to_numpy()  # no karma: lowest
        date = meta["date"].to_pylist()
        doc_id = meta["doc_id"].to_pylist()
        exact_key = meta["exact_key"].to_numpy()
        # the keeper rule: highest score, then earliest date (none: last), then smallest doc_id
        no_date = np.array([d is None for d in date], dtype=bool)
        order = np.lexsort((np.array(doc_id, dtype=str), np.array([d or "" for d in date], dtype=str), no_date,
                            -score, label)) if len(nodes) else np.zeros(0, np.int64)
        first = np.ones(len(order), dtype=bool)
        first[1:] = label[order][1:] != label[order][:-1]
        keeper = np.empty(len(nodes), dtype=np.int64)
        keeper[label[order][first]] = order[first]  # keeper[root label] = the node kept
        sizes = np.bincount(label, minlength=len(nodes))
        scores = meta["score"].to_pylist()
        drop_rows, cluster_rows = [], []
        for i in order.tolist():
            k = int(keeper[label[i]])
            size = int(sizes[label[i]])
            cluster_rows.append((doc_id[k], doc_id[i], i == k, scores[i], date[i], size))
            if i != k:
                reason = "exact_duplicate" if exact_key[i] == exact_key[k] else "near_duplicate"
                drop_rows.append((int(nodes[i]), reason, doc_id[k], size))
        ctx.write_table(ctx.work_name(DROPPED_NAME), Rows.table(drop_rows, DROP_SCHEMA))
        ctx.write_table(CLUSTERS, Rows.table(cluster_rows, CLUSTER_SCHEMA))
        ctx.count("clusters", int(first.sum()))

    # -- 5. write -------------------------------------------------------------------------------------------------

    def write(self, task: WriteTask, ctx: TaskContext) -> None:
        part = task.part
        table = read_documents(task.file, CORE_COLUMNS)
        ctx.count("in", table.num_rows)
        dropped = ctx.read_work(COMPONENTS, 0, DROPPED_NAME)
        keys = dropped["doc_key"].to_numpy()
        mine = dropped.filter(pa.array(part_of(keys) == part)).sort_by("doc_key")
        rows = (mine["doc_key"].to_numpy() & 0xFFFFFFFF).astype(np.int64)
        keep = np.ones(table.num_rows, dtype=bool)
        keep[rows] = False
        ctx.write_part(table.filter(pa.array(keep)))
        if len(rows):
            gone = table.take(pa.array(rows))
            ctx.reject(pa.Table.from_arrays(
                [mine["reason"], mine["duplicate_of"], mine["cluster_size"], *gone.columns],
                schema=pa.schema([*REJECT_FIELDS, *gone.schema])))


def _bucket_name(bucket: int) -> str:
    return f"bucket-{bucket:05d}.parquet"


def _pairs_name(part: int) -> str:
    return f"pairs-{part:05d}.parquet"
