"""bench/project.py: the WebText-scale table is arithmetic on the measured figures, and a missing figure is named."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_project", REPO / "bench" / "project.py")
project = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(project)

STAGES = project.STAGES


def stage_figures(cpu_s: float, units: float, input_bytes: float, written: float) -> dict:
    return {"cpu_s": cpu_s, "units": units, "unit": "u", "input_bytes": input_bytes, "bytes_written": written,
            "files_written": 10, "work_files": 4, "tasks": 3}


def write_results(directory: Path) -> dict:
    # at 16x every stage spends 2 CPU-seconds on 1,000 units (or 4 MB of input) and writes 1 MB; 1x is different,
    # so a projection that read 1x instead of the largest size would be caught
    scale = {stage: {"1": stage_figures(9.0, 10, 10, 10), "16": stage_figures(2.0, 1000, 4e6, 1e6)}
             for stage in STAGES}
    million = {"100000": {"cpu_s": 1.0, "input_bytes": 1.0, "work_bytes": 1.0},
               "1000000": {"cpu_s": 50.0, "input_bytes": 1e9, "work_bytes": 2e9}}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "scale.json").write_text(json.dumps({"meta": {}, "figures": scale}))
    (directory / "dedup_million.json").write_text(json.dumps({"meta": {}, "figures": million}))
    return scale


def test_projection_arithmetic(tmp_path):
    write_results(tmp_path)
    rows = {r["stage"]: r for r in project.projection(project.load(tmp_path))}
    assert rows["crawl"]["core_hours"] == pytest.approx(project.LINKS * 2.0 / 1000 / 3600)
    assert rows["crawl"]["bytes"] == pytest.approx(project.LINKS * 1e6 / 1000)
    assert rows["urls"]["core_hours"] == pytest.approx(project.SUBMISSIONS * 2.0 / 1000 / 3600)
    assert rows["extract"]["core_hours"] == pytest.approx(project.LINKS * 2.0 / 1000 / 3600)
    # per byte of input for the text stages
    assert rows["filter"]["core_hours"] == pytest.approx(project.PRE_DEDUP_TEXT * 2.0 / 4e6 / 3600)
    assert rows["tokenize"]["core_hours"] == pytest.approx(project.TEXT_BYTES * 2.0 / 4e6 / 3600)
    assert rows["tokenize"]["bytes"] == pytest.approx(project.TEXT_BYTES * 1e6 / 4e6)
    # dedup: CPU and the _work/ shuffle from the 10^6 run, the output from the scale run
    assert rows["dedup"]["core_hours"] == pytest.approx(project.PRE_DEDUP_TEXT * 50.0 / 1e9 / 3600)
    assert rows["dedup"]["bytes"] == pytest.approx(project.PRE_DEDUP_TEXT * (1e6 / 4e6 + 2.0))
    # dedup's requests: 4 P S shuffle and pair objects (written and read) dominate
    parts = -(-project.LINKS // project.CRAWL_URLS_PER_BUCKET)
    buckets = -(-project.PRE_DEDUP_TEXT // project.DEDUP_BUCKET_BYTES)
    assert rows["dedup"]["requests"] == pytest.approx(4 * parts * buckets + parts * (3 + 2) + buckets)
    text = project.table(list(rows.values()))
    total = sum(r["core_hours"] for r in rows.values())
    assert f"**{total:,.1f}**" in text
    assert f"{total / project.HOURS:,.1f} cores" in text


def test_writes_between_the_markers_and_check(tmp_path):
    write_results(tmp_path / "results")
    doc = tmp_path / "scaling.md"
    doc.write_text(f"# before\n{project.BEGIN}\nold table\n{project.END}\nafter\n")
    assert project.main(["--check"], results=tmp_path / "results", doc_path=doc) == 1  # stale
    assert project.main([], results=tmp_path / "results", doc_path=doc) == 0
    text = doc.read_text()
    assert text.startswith("# before\n") and text.endswith(f"{project.END}\nafter\n") and "old table" not in text
    assert "| dedup |" in text
    assert project.main(["--check"], results=tmp_path / "results", doc_path=doc) == 0


@pytest.mark.parametrize("remove,named", [
    (("scale.json", ("dedup", "16", "cpu_s")), "scale/dedup/16/cpu_s"),
    (("scale.json", ("tokenize",)), "scale/tokenize"),
    (("dedup_million.json", ("1000000", "work_bytes")), "dedup_million/1000000/work_bytes"),
    (("dedup_million.json", None), "dedup_million.json"),
])
def test_a_missing_figure_is_named_and_the_document_kept(tmp_path, capsys, remove, named):
    write_results(tmp_path / "results")
    name, path = remove
    file = tmp_path / "results" / name
    if path is None:
        file.unlink()
    else:
        data = json.loads(file.read_text())
        node = data["figures"]
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
        file.write_text(json.dumps(data))
    doc = tmp_path / "scaling.md"
    original = f"{project.BEGIN}\nold\n{project.END}\n"
    doc.write_text(original)
    assert project.main([], results=tmp_path / "results", doc_path=doc) == 2
    assert f"missing figure: {named} " in capsys.readouterr().err
    assert doc.read_text() == original
