"""The corpus in the ecosystem: the documents load as they are with `datasets` and Ray Data, `webtext card` writes a
Hugging Face dataset card whose front matter parses and whose `configs` load the documents, and `webtext export`
writes a model card with the run's config, data and validation loss."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from jobs.cli import main
from jobs.fixtures.dupgen import planted_corpus, write_parts
from pipeline.documents import DOC_SCHEMA


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def parquet_docs(directory: Path) -> list[dict]:
    return [r for p in sorted(directory.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]


@pytest.fixture
def corpus(tmp_path, capsys):
    """A real dedup output (4 parts, one of them empty, rejects and clusters beside them) of documents with planted
    duplicates."""
    write_parts(planted_corpus(4, 12, seed=3), tmp_path / "docs", 3)
    pq.write_table(DOC_SCHEMA.empty_table(), tmp_path / "docs" / "part-00003.parquet")
    out = tmp_path / "out"
    assert main(["dedup", "--docs", str(tmp_path / "docs"), "--out", str(out), "--executor", "local"]) == 0
    capsys.readouterr()
    assert list((out / "dedup" / "_rejected").glob("*.parquet"))  # what a loader must not pick up
    assert pq.read_metadata(out / "dedup" / "part-00003.parquet").num_rows == 0  # what a loader must read
    return out


def test_the_documents_load_with_datasets_as_they_are(corpus, tmp_path):
    datasets = pytest.importorskip("datasets")
    docs = parquet_docs(corpus / "dedup")
    loaded = datasets.load_dataset("parquet", data_files=str(corpus / "dedup" / "part-*.parquet"), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert loaded.column_names == DOC_SCHEMA.names
    assert sorted(loaded["doc_id"]) == sorted(d["doc_id"] for d in docs) and len(docs) > 0
    assert dict(zip(loaded["doc_id"], loaded["text"])) == {d["doc_id"]: d["text"] for d in docs}


@pytest.mark.slow
def test_the_documents_load_with_ray_data_from_the_stage_directory(corpus, ray_session):
    import ray

    docs = parquet_docs(corpus / "dedup")
    dataset = ray.data.read_parquet(str(corpus / "dedup"))
    assert dataset.schema().names == DOC_SCHEMA.names
    rows = dataset.take_all()
    assert sorted(r["doc_id"] for r in rows) == sorted(d["doc_id"] for d in docs)


def test_the_dataset_card_parses_and_its_configs_load_the_documents(corpus, tmp_path, capsys):
    assert main(["card", str(corpus)]) == 0
    text = (corpus / "README.md").read_text()
    meta = front_matter(text)
    manifest = json.loads((corpus / "dedup" / "_manifest.json").read_text())
    n_docs = manifest["funnel"]["out"]
    assert meta["language"] == ["en"] and meta["size_categories"] == ["n<1K"]
    assert meta["task_categories"] == ["text-generation"] and meta["license"] == "other"
    assert meta["configs"] == [{"config_name": "default",
                                "data_files": [{"split": "train", "path": "dedup/part-*.parquet"}]}]
    for heading in ("## Recipe", "## Funnel", "## Languages", "## Sizes", "## License and terms"):
        assert heading in text
    assert f"| dedup | {manifest['funnel']['in']:,} | {n_docs:,} |" in text
    assert f"threshold: {manifest['config']['threshold']}" in text  # the config that built it
    assert "third-party web pages" in text
    hub = pytest.importorskip("huggingface_hub")
    card = hub.DatasetCard.load(corpus / "README.md")
    assert card.data.to_dict()["configs"] == meta["configs"]
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset(str(corpus), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert loaded.num_rows == n_docs and loaded.column_names == DOC_SCHEMA.names


def test_a_card_of_an_output_without_documents_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["card", str(tmp_path / "empty")]) == 2
    assert "no finished document stage" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "README.md").exists()


def test_the_card_is_written_to_s3_too(tmp_path, s3, capsys):
    write_parts(planted_corpus(2, 4, seed=5), tmp_path / "docs", 2)
    out = s3("bucket/corpus")
    assert main(["dedup", "--docs", str(tmp_path / "docs"), "--out", out, "--executor", "local"]) == 0
    assert main(["card", out]) == 0
    from pipeline.storage import Dir

    meta = front_matter(Dir(out).read_bytes("README.md").decode())
    assert meta["configs"][0]["data_files"][0]["path"] == "dedup/part-*.parquet"


@pytest.mark.slow
def test_the_exported_model_has_a_card_with_the_run_config_data_and_val_loss(tmp_path, capsys):
    from tests.helpers import run_tiny, write_token_dataset
    from training.metrics import read_metrics

    run = tmp_path / "run"
    run_tiny(write_token_dataset(tmp_path / "tokens"), run, max_steps=8)
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "hf")]) == 0
    text = (tmp_path / "hf" / "README.md").read_text()
    val = [r for r in read_metrics(run / "metrics.jsonl") if "val_loss" in r][-1]
    meta = front_matter(text)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert metrics[0]["type"] == "loss" and metrics[0]["value"] == pytest.approx(val["val_loss"], abs=1e-6)
    assert "checkpoint `step_00000008`" in text and "1,024 tokens seen" in text  # 8 steps x 4 x 32
    assert str(tmp_path / "tokens" / "part-train-00000.bin") in text  # the data
    assert "max_steps: 8" in text  # the config
    hub = pytest.importorskip("huggingface_hub")
    card = hub.ModelCard.load(tmp_path / "hf" / "README.md")
    assert card.data.eval_results[0].metric_value == pytest.approx(val["val_loss"], abs=1e-6)
