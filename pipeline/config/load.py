"""params.yaml, loaded once into typed, validated, documented dataclasses (pipeline.config.schema).

A wrong key or value fails at start-up with a message that names it; values that must agree across
sections are checked (pipeline.config.rules) before any work starts.
"""

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.config import rules
from pipeline.config.layout import PARAMS_FILE
from pipeline.config.schema import Params
from pipeline.core.errors import PipelineError


def load_params(path: Path = PARAMS_FILE) -> Params:
    """Read and validate a params file; raise PipelineError naming the first bad key or value."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {exc}") from None
    params = _build(Params, raw, str(path), "")
    rules.check(params, str(path))
    return params


def _build(cls: type, raw: Any, file: str, where: str) -> Any:
    """Turn nested YAML into the dataclass `cls`, checking keys and types on the way down.

    Every field must be in the file: the loader is no stage's dependency in dvc.yaml, so a default
    written here must never decide an output (a changed default would not rerun the stage). Defaults
    in the dataclasses serve library callers and document a sensible value."""
    if not isinstance(raw, dict):
        raise PipelineError(f"{file}: {where or 'top level'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise PipelineError(f"{file}: {where}{unknown[0]}: unknown key (expected one of: {', '.join(fields)})")
    values = {}
    for name in fields:
        key = f"{where}{name}"
        if name not in raw and name in getattr(cls, "OPTIONAL", ()):
            values[name] = next(f.default for f in dataclasses.fields(cls) if f.name == name)
            continue
        if name not in raw:
            raise PipelineError(
                f"{file}: {key}: missing; every field must be set in the params file "
                "(its meaning and a sensible value: pipeline/config/schema.py)"
            )
        values[name] = _convert(hints[name], raw[name], file, key)
    return cls(**values)


def _convert(hint: Any, value: Any, file: str, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, file, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, file, key)
    if origin is Literal:
        if value not in args:
            raise PipelineError(f"{file}: {key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise PipelineError(f"{file}: {key}: expected a list, got {value!r}")
        return tuple(_convert(args[0], item, file, f"{key}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise PipelineError(f"{file}: {key}: expected a mapping, got {value!r}")
        return {str(k): _convert(args[1], v, file, f"{key}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise PipelineError(f"{file}: {key}: expected {hint.__name__}, got {value!r}")
    return value
