"""The document table that extract writes and filter and dedup read and write (DESIGN.md, stage `extract`)."""

from __future__ import annotations

import pyarrow as pa

DOC_SCHEMA = pa.schema([
    ("doc_id", pa.string()),
    ("url", pa.string()),
    ("host", pa.string()),
    ("title", pa.string()),
    ("text", pa.string()),
    ("date", pa.string()),  # ISO date the page gives for itself (trafilatura/htmldate), null when none
    ("lang", pa.string()),
    ("lang_score", pa.float32()),
    ("n_chars", pa.int64()),
    ("n_words", pa.int64()),
    ("score", pa.int64()),  # Reddit karma of the URL (the urls table's score_max), null outside the Reddit crawl
    ("subreddits", pa.list_(pa.string())),
    ("warc_file", pa.string()),
    ("warc_offset", pa.int64()),
])


def read_parquet(file, columns: list[str] | None = None) -> pa.Table:
    """A Parquet `InputFile` (local path or URI) as a table."""
    import pyarrow.parquet as pq

    from pipeline.storage import filesystem

    fs, path = filesystem(file.uri)
    return pq.read_table(path, filesystem=fs, columns=columns)


def read_documents(file) -> pa.Table:
    """A document Parquet file (an `InputFile`), checked for the columns of DOC_SCHEMA and cast to it."""
    from pipeline.runner import StageError

    table = read_parquet(file)
    missing = [name for name in DOC_SCHEMA.names if name not in table.column_names]
    if missing:
        raise StageError(f"{file.uri}: not a document table: missing columns {', '.join(missing)}")
    return table.select(DOC_SCHEMA.names).cast(DOC_SCHEMA)
