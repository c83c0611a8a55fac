"""The layers of README's Layout hold: nothing in pipeline/ imports training/ or jobs/, nothing in training/ imports
jobs/ or any of pipeline/ but its shared base, and the shared base imports no other module of pipeline/. Read from the
source, so every import counts wherever it stands: one inside a function (which hides a cycle until it runs) and
`importlib.import_module("...")` with a literal name too. And a constant that one module writes and another reads
is declared once: no two modules assign the same name-like literal.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "training", "jobs")
# The modules of pipeline/ that training/ may import (README, Layout): what both layers share.
SHARED_BASE = frozenset({"config", "errors", "executor", "layout", "shards", "storage", "tokenizer"})


def module_of(path: Path, root: Path = REPO) -> str:
    rel = path.relative_to(root).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (REPO / package).rglob("*.py"))


def _literal_import(node: ast.Call) -> str | None:
    """The module named by `importlib.import_module("x")` or `__import__("x")`, when the name is a literal."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in `source`, nested ones included; `from a import b` is `a.b` (b a
    module or a name in a), a relative import is made absolute from `module`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and (name := _literal_import(node)) is not None:
            found.append((node.lineno, name))
    return found


def broken_rule(module: str, imported: str) -> str | None:
    """Why `module` may not import `imported`, or None when it may."""
    layer, own, *_ = [*module.split("."), None]
    top, sub, *_ = [*imported.split("."), None]
    if layer == "pipeline" and top in ("training", "jobs"):
        return f"pipeline/ is the base layer and imports nothing of {top}/"
    if layer == "training" and top == "jobs":
        return "training/ imports nothing of jobs/, the top layer"
    if layer == "training" and top == "pipeline" and sub not in SHARED_BASE:
        return f"training/ imports of pipeline/ only its shared base ({', '.join(sorted(SHARED_BASE))})"
    if layer == "pipeline" and own in SHARED_BASE and top == "pipeline" and sub not in SHARED_BASE:
        return "the shared base of pipeline/ imports no other module of pipeline/ (training would reach it through it)"
    return None


def layer_violations(paths: list[Path], root: Path = REPO) -> list[str]:
    found = []
    for path in paths:
        module = module_of(path, root)
        for line, imported in imports_of(path.read_text(), module, path.name == "__init__.py"):
            if (why := broken_rule(module, imported)) is not None:
                found.append(f"{path.relative_to(root)}:{line}: {module} imports {imported}: {why}")
    return found


def test_layers_hold():
    paths = sources("pipeline", "training")
    assert len(paths) > 40 and (REPO / "pipeline" / "runner.py") in paths
    found = layer_violations(paths)
    assert not found, "\n".join(found)


def test_the_check_sees_every_kind_of_import(tmp_path):
    def violations(module: str, source: str) -> list[str]:
        return [f"{line} {name}" for line, name in imports_of(source, module) if broken_rule(module, name)]

    lazy = "import json\n\ndef report(out):\n    from training.metrics import read_metrics\n" \
           "    return importlib.import_module('jobs.report'), __import__('jobs.fixtures.localweb')\n"
    assert violations("pipeline.report", lazy) == ["4 training.metrics.read_metrics", "5 jobs.report",
                                                   "5 jobs.fixtures.localweb"]
    assert violations("training.storage", "from pipeline.runner import MANIFEST\nfrom pipeline import previous\n"
                                          "import pipeline\nfrom pipeline.storage import Dir\n"
                                          "from pipeline.layout import MANIFEST\nfrom ..jobs import cli\n") == [
        "1 pipeline.runner.MANIFEST", "2 pipeline.previous", "3 pipeline", "6 jobs.cli"]
    assert violations("pipeline.storage", "from pipeline.errors import StageError\nfrom . import runner\n") == [
        "2 pipeline.runner"]
    assert violations("pipeline.crawl", "from pipeline.runner import Stage\nfrom .fetch import Fetcher\n") == []
    assert violations("jobs.demo", "from training.launch import launch\nfrom pipeline.runner import run_stage\n") == []
    # The whole check on a tree: it names the file, line and import.
    (tmp_path / "pipeline").mkdir()
    bad = tmp_path / "pipeline" / "report.py"
    bad.write_text(lazy)
    assert layer_violations([bad], tmp_path)[0] == (
        "pipeline/report.py:4: pipeline.report imports training.metrics.read_metrics: pipeline/ is the base layer "
        "and imports nothing of training/")


def _declared_literals(path: Path) -> dict[str, str]:
    """repr(value) -> name of each module-level constant of `path` that names something: a string, a tuple or list of
    strings, or an integer of 256 or more (a vocabulary size, a token id: two such in two modules are one fact) that
    is not a power of two (buffer and chunk sizes are powers of two by habit, and two of them say two things)."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
            continue
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            continue
        strings = isinstance(value, (tuple, list)) and value and all(isinstance(v, str) for v in value)
        if (isinstance(value, str) and value) or strings or (type(value) is int and abs(value) >= 256 and abs(value) & (abs(value) - 1)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found[repr(tuple(value) if strings else value)] = ", ".join(ast.unparse(t) for t in targets)
    return found


def test_each_constant_is_declared_once():
    declared: dict[str, list[str]] = {}
    for path in sources(*PACKAGES):
        for value, name in _declared_literals(path).items():
            declared.setdefault(value, []).append(f"{path.relative_to(REPO)} ({name})")
    repeated = [f"{value} in {' and '.join(where)}" for value, where in declared.items() if len(where) > 1]
    assert not repeated, "declare each once, where every user imports it:\n" + "\n".join(repeated)
    # The names readers outside the writing stage look up are among them, declared where README's Layout says.
    from pipeline import layout, shards, tokenizer

    for module, name in ((layout, "MANIFEST"), (layout, "CLUSTERS"), (layout, "STAGES"), (shards, "INDEX_NAME"),
                         (tokenizer, "GPT2_EOT"), (tokenizer, "GPT2_N_VOCAB")):
        assert declared[repr(getattr(module, name))] == [f"{module.__name__.replace('.', '/')}.py ({name})"]


def test_the_stage_order_is_the_layouts():
    """Each stage names its own directory (`Stage.name`); the corpus job runs them in the layout's order, which the
    report reads: one order, checked here rather than written twice."""
    from jobs.build_corpus import CorpusConfig, corpus_stages
    from pipeline.layout import STAGES

    assert [stage.name for stage in corpus_stages(CorpusConfig())] == list(STAGES)
    assert list(CorpusConfig.model_fields) == list(STAGES)


def test_every_import_of_a_project_name_resolves():
    """An import inside a function runs only when its path does: a name moved to another module must not leave one
    behind (seen: `webtext export` importing a URI helper from training.storage after it moved to pipeline.storage)."""
    import importlib

    broken = []
    for root in (*PACKAGES, "bench", "tests"):
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                        and node.module.split(".")[0] in (*PACKAGES, "tests")):
                    continue
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                try:
                    module = importlib.import_module(node.module)
                except ImportError as err:
                    broken.append(f"{where}: {err}")
                    continue
                for alias in node.names:
                    submodule = hasattr(module, "__path__") and importlib.util.find_spec(
                        f"{node.module}.{alias.name}") is not None
                    if not hasattr(module, alias.name) and not submodule:
                        broken.append(f"{where}: {node.module} has no {alias.name}")
    assert not broken, "\n".join(broken)
