"""The document table that extract writes and filter and dedup read and write (DESIGN.md, stage `extract`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
    ("source", pa.string()),  # live or archive (the crawl's fetch log); null outside a crawl of ours
    ("capture_time", pa.timestamp("ms", tz="UTC")),  # an archive's page: when the archive captured it
])

CORE_COLUMNS = ("doc_id", "text")  # what every document table has: its key and its text
# pyarrow type predicates of a column of text (doc_id, text, lang), for `check_documents`
TEXT_TYPES = (pa.types.is_string, pa.types.is_large_string)


def read_parquet(file, columns: list[str] | None = None) -> pa.Table:
    """A Parquet `InputFile` (local path or URI) as a table."""
    import pyarrow.parquet as pq

    from pipeline.storage import filesystem

    fs, path = filesystem(file.uri)
    return pq.read_table(path, filesystem=fs, columns=columns)


def parquet_schema(file) -> pa.Schema:
    """The Arrow schema of a Parquet `InputFile`, from its footer; StageError naming the file if it is not Parquet."""
    import pyarrow.parquet as pq

    from pipeline.runner import StageError
    from pipeline.storage import filesystem

    fs, path = filesystem(file.uri)
    try:
        with fs.open_input_file(path) as f:
            return pq.read_schema(f)
    except (pa.ArrowInvalid, OSError) as err:
        raise StageError(f"{file.uri}: not a readable Parquet file: {err}") from None


def check_documents(files: list, required: tuple[str, ...], types: dict[str, tuple] | None = None,
                    reserved: tuple[str, ...] = ()) -> None:
    """Plan-time check of user-given document files: each opens as Parquet and has the `required` columns, an
    optional column present has one of the accepted type kinds (`types`: column -> pyarrow.types predicates), and
    none is named like a column the stage adds to its rejects (`reserved`). Raises StageError naming the file and
    the column."""
    from pipeline.runner import StageError

    for file in files:
        schema = parquet_schema(file)
        clash = [name for name in reserved if name in schema.names]
        if clash:
            raise StageError(f"{file.uri}: column {clash[0]} has the name of a column this stage adds to its "
                             f"rejects ({', '.join(reserved)}): rename or drop it")
        missing = [name for name in required if name not in schema.names]
        if missing:
            raise StageError(f"{file.uri}: not a document table: missing column{'s' * (len(missing) > 1)} "
                             f"{', '.join(missing)} (required: {', '.join(required)})")
        for name, accepted in (types or {}).items():
            if name in schema.names and not any(ok(schema.field(name).type) for ok in accepted):
                raise StageError(f"{file.uri}: column {name} has type {schema.field(name).type}, "
                                 f"which this stage cannot read")


@contextmanager
def open_documents(file, required: tuple[str, ...] = CORE_COLUMNS) -> Iterator:
    """A document Parquet file (an `InputFile`) opened as a `pyarrow.parquet.ParquetFile`, to read in batches;
    a StageError naming the file if it is not Parquet or lacks a `required` column."""
    import pyarrow.parquet as pq

    from pipeline.runner import StageError
    from pipeline.storage import filesystem

    fs, path = filesystem(file.uri)
    with fs.open_input_file(path) as f:
        try:
            parquet = pq.ParquetFile(f)
        except (pa.ArrowInvalid, OSError) as err:
            raise StageError(f"{file.uri}: not a readable Parquet file: {err}") from None
        missing = [c for c in required if c not in parquet.schema_arrow.names]
        if missing:
            raise StageError(f"{file.uri}: not a document table: missing columns {', '.join(missing)}")
        yield parquet


def read_documents(file, required: tuple[str, ...] = CORE_COLUMNS) -> pa.Table:
    """A document Parquet file (an `InputFile`) as it is: every column with the user's own type; only `required`
    must be there."""
    from pipeline.runner import StageError

    table = read_parquet(file)
    missing = [name for name in required if name not in table.column_names]
    if missing:
        raise StageError(f"{file.uri}: not a document table: missing columns {', '.join(missing)}")
    return table
