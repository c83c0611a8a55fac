"""What every stage builds its tables and its drops with: `Rows`, rows gathered into Arrow tables, and `Reject`, the
reason a record is dropped (written with the record's origin to the stage's rejected records by `TaskContext.reject`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa


class Reject(Exception):
    """A record breaks a rule: `reason` names the rule (the rejected record's `reason`, counted in the funnel as
    `rejected:<reason>`), `detail` says what was seen. A rule raises it, or returns it where raising once per record
    would cost more than the rule itself."""

    __slots__ = ("reason", "detail")

    def __init__(self, reason: str, detail: str = ""):  # no super().__init__: made once per dropped record
        self.reason, self.detail = reason, detail

    def __str__(self) -> str:
        return self.reason


class Rows:
    """Rows (tuples in the order of `schema`'s columns) gathered in Python and taken as one Arrow table at a time.

    With a `sink`, each `batch_rows` rows go to it as a table as soon as they are there, and the rest on `flush`.
    """

    def __init__(self, schema: pa.Schema, sink: Callable[[pa.Table], Any] | None = None, batch_rows: int = 0):
        self.schema, self.sink, self.batch_rows = schema, sink, batch_rows
        self.rows: list[tuple] = []

    def add(self, *values: Any) -> None:
        self.rows.append(values)
        if self.sink is not None and len(self.rows) >= self.batch_rows:
            self.flush()

    def __len__(self) -> int:
        return len(self.rows)

    def take(self) -> pa.Table:
        """The rows gathered so far, as a table of `schema` (typed even when empty); the buffer is empty after."""
        table = self.table(self.rows, self.schema)
        self.rows = []
        return table

    def flush(self) -> None:
        if self.rows:
            self.sink(self.take())

    @staticmethod
    def table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
        columns = list(zip(*rows)) if rows else [[] for _ in schema]
        return pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, schema)], schema=schema)
