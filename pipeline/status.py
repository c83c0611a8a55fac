"""Where a corpus output stands, read-only: for each stage, current, stale (and why), partial or running, with its
funnel and size.

A stage is current when its manifest carries the plan the given config and today's inputs make (what the runner
would skip); stale when it does not, with each difference named: a config key (old -> new value), an input file
added, removed or changed, the stage's version, or a stage upstream that will be rebuilt first; partial when tasks
are done but no manifest is written (a killed or failed run: tasks done of the total the config plans, the last
task error recorded by pipeline/task_errors.py); running while a live command holds its lock. Nothing is written.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline import previous, task_errors
from pipeline.errors import StageError
from pipeline.lock import LOCK_NAME, Holder
from pipeline.layout import MANIFEST
from pipeline.runner import TASKS_DIR, Stage, plan_hash
from pipeline.storage import Dir, InputFile, expand_inputs, is_within, join

SHOWN_DIFFERENCES = 5  # input files named per stage; the rest are counted


@dataclass
class StageStatus:
    name: str
    location: str
    state: str  # missing | current | stale | partial | running
    reasons: list[str] = field(default_factory=list)  # why stale; what is odd
    tasks_done: int | None = None
    tasks_total: int | None = None
    last_error: dict | None = None  # {task, plan, error, type, at}
    funnel: dict[str, int] | None = None  # of the finished output (a stale one's is that of its old plan)
    parts: int = 0
    bytes: int = 0
    finished_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def corpus_status(out: str, stages: list[Stage], first_inputs: list[str] | None = None) -> list[StageStatus]:
    """The status of each of `stages` (in pipeline order, each reading the one before it) under `out`, against their
    configs as given. `first_inputs`: the first stage's inputs (dumps) as a command would name them; by default the
    files its manifest lists."""
    statuses: list[StageStatus] = []
    for i, stage in enumerate(stages):
        specs = first_inputs if i == 0 else [join(out, stages[i - 1].name)]
        status = stage_status(out, stage, specs)
        upstream = next((s for s in reversed(statuses) if s.state not in ("current", "missing")), None)
        if upstream is not None and status.state == "current":
            status.state = "stale"
            status.reasons.append(f"upstream stage {upstream.name} is {upstream.state}: it is rebuilt first, "
                                  "then this one")
        statuses.append(status)
    return statuses


def stage_status(out: str, stage: Stage, input_specs: list[str] | None) -> StageStatus:
    """One stage's status; `input_specs` as a command names them (None: the files its manifest lists)."""
    directory = Dir(out).sub(stage.name)
    status = StageStatus(stage.name, directory.location, "missing")
    if not directory.exists(""):
        return status
    manifest, note = _manifest(directory)
    if note:
        status.reasons.append(note)
    if input_specs and manifest and manifest.get("inputs") and not any(
            is_within(i["uri"], spec) for i in manifest["inputs"] for spec in input_specs):
        input_specs = None  # the stage was run on inputs of its own (`webtext dedup --docs mine/`): those count
    inputs, problems = _current_inputs(input_specs, manifest)
    status.reasons.extend(problems)
    plan = plan_hash(stage, inputs) if inputs is not None else None
    markers = _json_files(directory, TASKS_DIR)
    holder = _live_holder(directory)
    if manifest is not None:
        status.funnel = funnel_order(manifest["funnel"]) if manifest.get("funnel") else None
        status.parts = len(manifest.get("parts", []))
        status.bytes = sum(p.get("bytes", 0) for p in manifest.get("parts", []))
        status.finished_at = manifest.get("finished_at")
    if holder is not None:
        status.state = "running"
        status.reasons.append(f"held by {holder.describe()}")
    elif manifest is not None and plan is not None and manifest.get("plan") == plan:
        status.state = "current"
        return status
    elif manifest is not None:
        status.state = "stale"
        status.reasons.extend(stale_reasons(stage, manifest, inputs))
        if plan is not None and not status.reasons:
            status.reasons.append("its plan differs from the one the config and inputs make now")
    elif markers or directory.list(""):
        status.state = "partial"
    else:
        return status
    if status.state in ("running", "partial"):
        _tasks(status, stage, inputs, plan, markers)
    return status


def stale_reasons(stage: Stage, manifest: dict, inputs: list[InputFile] | None) -> list[str]:
    """What differs between a finished output's manifest and a run now: version, config keys, input files."""
    reasons = []
    if manifest.get("version") != stage.version:
        reasons.append(f"stage version {manifest.get('version')} -> {stage.version} (the output's meaning changed)")
    for key, old, new in config_differences(manifest.get("config", {}), stage.config.model_dump(mode="json")):
        reasons.append(f"config {stage.name}.{key}: {_show(old)} -> {_show(new)}")
    if inputs is not None:
        reasons.extend(input_differences(manifest.get("inputs", []), inputs))
    return reasons


def funnel_order(funnel: dict[str, int]) -> dict[str, int]:
    """in, out, the reject reasons, then the other counters (a manifest stores them sorted by name)."""
    return {k: funnel[k] for k in sorted(funnel, key=lambda k: (k != "in", k != "out", not k.startswith("rejected:"),
                                                                   k))}


def config_differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for each key whose value differs; nested sections compared key by key."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found.extend(config_differences(old.get(key, _ABSENT), new.get(key, _ABSENT), f"{prefix}{key}."))
        return found
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def input_differences(recorded: list[dict], inputs: list[InputFile]) -> list[str]:
    """Input files added, gone or changed (size, modification time) since the manifest was written."""
    before = {i["uri"]: (i["size"], i["mtime_ns"]) for i in recorded}
    now = {f.uri: (f.size, f.mtime_ns) for f in inputs}
    differences = []
    for uri in sorted(set(before) | set(now)):
        name = _display(uri)
        if uri not in now:
            differences.append(f"input {name} is gone")
        elif uri not in before:
            differences.append(f"input {name} is new")
        elif before[uri][0] != now[uri][0]:
            differences.append(f"input {name} changed: {before[uri][0]:,} -> {now[uri][0]:,} bytes")
        elif before[uri] != now[uri]:
            differences.append(f"input {name} was rewritten (same size, new modification time)")
    if len(differences) > SHOWN_DIFFERENCES:
        rest = len(differences) - SHOWN_DIFFERENCES
        differences = differences[:SHOWN_DIFFERENCES] + [f"and {rest} more input files differ"]
    return differences


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


_ABSENT = _Absent()


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, _Absent) else json.dumps(value)


def _display(uri: str) -> str:
    return uri.split("?", 1)[0]


def _manifest(directory: Dir) -> tuple[dict | None, str]:
    """The stage's finished manifest: its own, or the one a killed rerun set aside (the next command puts it back)."""
    for name, note in ((MANIFEST, ""), (f"{previous.PREVIOUS_DIR}/{MANIFEST}",
                                         "a rerun stopped before its first task: the previous output is put back "
                                         "by the next command")):
        if directory.exists(name):
            try:
                return directory.read_json(name), note
            except ValueError:
                return None, f"{directory.uri(name)}: damaged manifest (the stage reruns)"
    return None, ""


def _current_inputs(specs: list[str] | None, manifest: dict | None) -> tuple[list[InputFile] | None, list[str]]:
    """The inputs a run would read now; None (with why) where they cannot be known or listed."""
    if specs is None:
        if manifest is None:
            return None, ["its inputs are unknown (no manifest): name them (--dumps) to count its tasks"]
        specs = [i["uri"] for i in manifest.get("inputs", [])]
        found = []
        for spec in specs:  # the files the manifest lists, each on its own: one gone is a difference, not an error
            try:
                found.extend(expand_inputs([spec]))
            except FileNotFoundError:
                continue
        return sorted(set(found)), []
    try:
        return expand_inputs(specs), []
    except FileNotFoundError as err:
        return None, [f"inputs: {err}"]


def _json_files(directory: Dir, subdir: str) -> list[dict]:
    """The JSON files directly under `subdir` (task markers, task errors); one being written is skipped."""
    found = []
    for name in directory.list(subdir, "*.json"):
        try:
            found.append(directory.read_json(name))
        except (OSError, ValueError):
            continue
    return found


def last_error(directory: Dir) -> dict | None:
    """The most recent error a task of the stage recorded (pipeline/task_errors.py), or None."""
    return max(_json_files(directory, task_errors.ERRORS_DIR), key=lambda e: (e.get("at", ""), e.get("task", "")),
               default=None)


def _live_holder(directory: Dir) -> Holder | None:
    """The command holding the stage's lock, if it is alive."""
    if not directory.exists(LOCK_NAME):
        return None
    try:
        holder = Holder(**json.loads(directory.read_bytes(LOCK_NAME)))
    except (OSError, ValueError, TypeError):
        return None
    return None if holder.is_stale() else holder


def _tasks(status: StageStatus, stage: Stage, inputs: list[InputFile] | None, plan: str | None,
           markers: list[dict]) -> None:
    """Tasks done of the total this config plans, the size they wrote, and the last error a task recorded."""
    mine = [m for m in markers if m.get("plan") == plan]
    status.tasks_done = len(mine)
    if status.funnel is None:
        status.parts = sum(name.startswith("part-") for m in mine for name in m.get("files", {}))
        status.bytes = sum(e.get("bytes", 0) for m in mine for n, e in m.get("files", {}).items()
                           if n.startswith("part-"))
    if len(mine) < len(markers):
        status.reasons.append(f"{len(markers) - len(mine)} task(s) done under another plan (config or inputs "
                              "changed since): rerun")
    if inputs is not None:
        try:
            status.tasks_total = sum(len(phase.tasks) for phase in stage.plan(inputs))
        except (StageError, OSError) as err:
            status.reasons.append(f"cannot plan its tasks: {err}")
    status.last_error = last_error(Dir(status.location))
