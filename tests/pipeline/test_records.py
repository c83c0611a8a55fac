"""The row buffer every stage builds its tables with, and the one Reject type."""

from __future__ import annotations

import pyarrow as pa

from pipeline.records import Reject, Rows

SCHEMA = pa.schema([("reason", pa.string()), ("line", pa.int64())])


def test_rows_become_typed_tables_and_go_to_the_sink_in_batches():
    batches = []
    rows = Rows(SCHEMA, batches.append, batch_rows=2)
    for i in range(5):
        rows.add("blank", i)
    assert [b.column("line").to_pylist() for b in batches] == [[0, 1], [2, 3]] and len(rows) == 1
    rows.flush()
    rows.flush()  # nothing left: no empty batch
    assert [b.num_rows for b in batches] == [2, 2, 1] and all(b.schema == SCHEMA for b in batches)
    assert Rows(SCHEMA).take().schema == SCHEMA  # typed when empty too
    assert Rows.table([(None, None)], SCHEMA).to_pylist() == [{"reason": None, "line": None}]


def test_a_reject_names_its_rule_raised_or_returned():
    try:
        raise Reject("bad_field", "score='x'")
    except Reject as err:
        assert (str(err), err.reason, err.detail) == ("bad_field", "bad_field", "score='x'")
    assert Reject("nsfw").detail == ""
