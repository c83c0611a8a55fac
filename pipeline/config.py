"""Typed configs: pydantic models loaded from YAML, overridden with `key=value`, unknown keys rejected.

Every config in webtext derives from `Config`. `load_config(Model, path, overrides)` is the one way to build
one from a file and `--set` overrides; errors name the file and the offending key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.errors import ConfigError

__all__ = ["Config", "ConfigError", "load_config", "parse_override"]

T = TypeVar("T", bound="Config")


class Config(BaseModel):
    """Base of every config: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    def config_hash(self) -> str:
        """A stable hash of the values, used by stage manifests to decide whether output is current."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=3` -> (["a", "b"], 3). The value is read as YAML, so numbers, booleans and lists work."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {item!r}: value is not valid YAML: {_yaml_problem(err)}") from None
    return key.strip().split("."), value


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's error on one line: where, then what (its own message spans lines and quotes the text)."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + (problem or str(err).strip().splitlines()[0])


def _apply_override(data: dict, path: list[str], value: Any, item: str) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {part!r} is not a section")
        node = child
    node[path[-1]] = value


def _describe(err: ValidationError, source: str) -> str:
    """One short line: the key first, then what is wrong with it, then where it came from."""
    problems = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown key {key!r}")
        elif not key:  # a check across keys: its message names them
            problems.append(msg)
        else:
            problems.append(f"key {key!r}: {msg} (got {_short(e.get('input'))})")
    return f"{'; '.join(problems)} (in {source})"


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_config(model: type[T], path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """Build `model` from a YAML file (optional) and `key=value` overrides, naming the source of any error."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"{path}: cannot read config: {err.strerror}") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(err)}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config must be a mapping of keys to values")
        data = loaded or {}
    for item in overrides:
        keys, value = parse_override(item)
        _apply_override(data, keys, value, item)
    if overrides:
        source += " + --set " + " ".join(item.partition("=")[0] for item in overrides)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None
