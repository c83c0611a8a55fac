"""The `filter` stage: documents -> the documents that pass language, length and quality rules.

One task per document part, rules in this order, the first broken one named in the reject reason:
1. `lang`: the language (from extract, or detected here with pycld2 when missing; see pipeline/langid.py) must be
   in `languages` with a score of at least `min_lang_score`;
2. `min_tokens`: at least 128 GPT-2 BPE tokens (pipeline/tokenizer.py, tiktoken offline), OpenWebText's rule;
3. the quality rules of pipeline/quality.py (Gopher / C4 style), each its own reason.
Every dropped document is kept whole in `_rejected/` with `reason` and `detail` (the measured value and limit).
Memory is flat in the size of a part and in the number of parts: a task streams its part `batch_rows` documents
at a time (Parquet record batches in, a row group of the output part and of the rejects out per batch), and GPT-2
tokens are counted one document at a time, so a task holds one batch whatever the part's size.

Input: any Parquet documents with a `text` column; `lang` and `lang_score` are filled by detection where absent
or null; every other column is passed through as it is, types included. The files are checked when the stage plans.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
from pydantic import Field

from pipeline.config import Config
from pipeline.documents import TEXT_TYPES, check_documents, open_documents
from pipeline.langid import detect_language
from pipeline.quality import QualityConfig, TextStats, first_failure
from pipeline.records import Reject
from pipeline.runner import Phase, Stage, StageError, TaskContext
from pipeline.storage import InputFile
from pipeline.tokenizer import count_tokens

REJECT_FIELDS = [("reason", pa.string()), ("detail", pa.string())]
REQUIRED_COLUMNS = ("text",)
COLUMN_TYPES = {"text": TEXT_TYPES, "lang": TEXT_TYPES, "lang_score": (pa.types.is_floating,)}
DETECTED_FIELDS = [pa.field("lang", pa.string()), pa.field("lang_score", pa.float32())]  # added where absent


class FilterConfig(Config):
    """Rules of the filter stage; every rule that drops a document names itself in the reject reason."""

    languages: list[str] = Field(["en"], description="kept languages (ISO 639-1); empty: any language")
    min_lang_score: float = Field(0.5, ge=0, le=1, description="share of the text in the detected language")
    min_tokens: int | None = Field(128, ge=1, description="OpenWebText: documents under 128 GPT-2 tokens dropped")
    quality: QualityConfig = QualityConfig()
    batch_rows: int = Field(1024, ge=1, description="documents read, judged and written at a time (a row group)")


class FilterStage(Stage):
    name = "filter"
    version = 1

    config: FilterConfig

    def plan(self, inputs: list[InputFile]) -> list[Phase]:
        docs = [f for f in inputs if f.name.endswith(".parquet")]
        if not docs:
            raise StageError("filter: no document Parquet files among the inputs")
        check_documents(docs, REQUIRED_COLUMNS, COLUMN_TYPES, reserved=tuple(n for n, _ in REJECT_FIELDS))
        return [Phase("parts", self.filter_part, docs)]  # a task per document part

    def filter_part(self, part: InputFile, ctx: TaskContext) -> None:
        with open_documents(part, REQUIRED_COLUMNS) as parquet:
            schema = parquet.schema_arrow
            for field in DETECTED_FIELDS:
                if field.name not in schema.names:
                    schema = schema.append(field)
            with ctx.open_part(schema) as write:
                for batch in parquet.iter_batches(batch_size=self.config.batch_rows):
                    self.filter_batch(pa.Table.from_batches([batch]), schema, write, ctx)

    def filter_batch(self, table: pa.Table, schema: pa.Schema, write: Callable[[pa.Table], None],
                     ctx: TaskContext) -> None:
        """Judge one batch of a part: the kept documents go to `write`, the others to the rejects with their reason."""
        ctx.count("in", table.num_rows)
        texts = [t or "" for t in table["text"].to_pylist()]
        n = table.num_rows
        langs = table["lang"].to_pylist() if "lang" in table.column_names else [None] * n
        scores = table["lang_score"].to_pylist() if "lang_score" in table.column_names else [None] * n
        if None in langs or None in scores:  # documents from elsewhere than extract: detect here
            for i, text in enumerate(texts):
                if langs[i] is None or scores[i] is None:
                    langs[i], scores[i] = detect_language(text)
            for name, values in (("lang", langs), ("lang_score", scores)):
                field = schema.field(name)
                if name in table.column_names:
                    table = table.set_column(table.schema.get_field_index(name), field, pa.array(values, field.type))
                else:
                    table = table.append_column(field, pa.array(values, field.type))
        verdicts = self.judge(texts, langs, scores)
        write(table.filter(pa.array([v is None for v in verdicts], pa.bool_())))
        dropped = [i for i, v in enumerate(verdicts) if v is not None]
        if dropped:
            rejected = table.take(dropped)
            ctx.reject(pa.Table.from_arrays(
                [pa.array([verdicts[i].reason for i in dropped], pa.string()),
                 pa.array([verdicts[i].detail for i in dropped], pa.string()), *rejected.columns],
                schema=pa.schema([*REJECT_FIELDS, *rejected.schema])))

    def judge(self, texts: list[str], langs: list[str], scores: list[float]) -> list[Reject | None]:
        """Per document: None (kept) or the first rule it breaks."""
        c = self.config
        verdicts: list[Reject | None] = [
            Reject("lang", f"{lang}:{score:.2f}")
            if c.languages and (lang not in c.languages or score < c.min_lang_score) else None
            for lang, score in zip(langs, scores)
        ]
        if c.min_tokens is not None:
            todo = [i for i, v in enumerate(verdicts) if v is None]
            for i, n in zip(todo, count_tokens([texts[i] for i in todo])):
                if n < c.min_tokens:
                    verdicts[i] = Reject("min_tokens", f"gpt2_tokens={n}<{c.min_tokens}")
        boilerplate = tuple(c.quality.boilerplate_phrases)
        for i, text in enumerate(texts):
            if verdicts[i] is None:
                verdicts[i] = first_failure(TextStats.of(text, boilerplate), c.quality, langs[i])
        return verdicts
