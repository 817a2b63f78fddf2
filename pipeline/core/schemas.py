"""One schema per JSON file the pipeline reads back: every such file lives in a run or search
directory, where anyone may have written it, so it is checked by type before any field is used.

A schema is plain data: a Python type, one of the named kinds below, a tuple of
alternatives, a dict of fields (a key starting with ``?`` is optional; ``"*"`` describes
every other key), or a one-element list (every item).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from pipeline.core.errors import RunDirError

NUMBER, FRACTION, COUNT, SHA256 = "number", "fraction", "count", "sha256"
NON_NEGATIVE = "non-negative"  # a finite number >= 0 (a time, a spread)
INTERVAL = "interval"          # [low, high]: two finite numbers, low <= high


def _kind_ok(value: Any, kind: str) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return False
    if kind == SHA256:
        return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    if isinstance(value, str) or not math.isfinite(value):
        return False
    if kind == FRACTION:
        return 0.0 <= value <= 1.0
    if kind == COUNT:
        return isinstance(value, int) and value >= 0
    if kind == NON_NEGATIVE:
        return value >= 0
    return True


def _interval_ok(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and all(_kind_ok(v, NUMBER) for v in value)
            and value[0] <= value[1])


def problems(value: Any, schema: Any, where: str = "") -> list[str]:
    """What in ``value`` does not fit ``schema`` (empty: it fits)."""
    if schema is Any:
        return []
    if schema is None:
        return [] if value is None else [f"{where or 'the file'} must be null"]
    if isinstance(schema, tuple):
        found = [problems(value, option, where) for option in schema]
        return [] if any(not f for f in found) else found[0]
    if isinstance(schema, str):
        if _interval_ok(value) if schema == INTERVAL else _kind_ok(value, schema):
            return []
        wanted = {NUMBER: "a number", FRACTION: "a number in [0, 1]", COUNT: "a count", SHA256: "a sha256",
                  NON_NEGATIVE: "a number >= 0", INTERVAL: "an interval [low, high]"}[schema]
        return [f"{where} must be {wanted}, got {_shown(value)}"]
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{where} must be a list, got {_shown(value)}"]
        return [p for i, item in enumerate(value) for p in problems(item, schema[0], f"{where}[{i}]")][:5]
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{where or 'the file'} must be an object, got {_shown(value)}"]
        found = []
        for key, field in schema.items():
            if key == "*":
                continue
            name, optional = key.lstrip("?"), key.startswith("?")
            if name not in value:
                if not optional:
                    found.append(f"{_join(where, name)} is missing")
                continue
            found += problems(value[name], field, _join(where, name))
        if "*" in schema:
            for key, item in value.items():
                if f"?{key}" not in schema and key not in schema:
                    found += problems(item, schema["*"], _join(where, str(key)))
        return found[:5]
    if schema is float:
        return [] if _kind_ok(value, NUMBER) else [f"{where} must be a number, got {_shown(value)}"]
    if schema is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{where} must be an integer, got {_shown(value)}"]
    return [] if isinstance(value, schema) and not (schema is not bool and isinstance(value, bool)) else [
        f"{where} must be {schema.__name__}, got {_shown(value)}"]


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def load(path: str | os.PathLike, schema: Any, *, what: str | None = None) -> Any:
    """``path``'s JSON, checked against ``schema``; one RunDirError (exit 7) naming the first
    problems otherwise."""
    from pipeline.core.fsutil import read_json

    path = Path(path)
    try:
        value = read_json(path)
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path} is unreadable ({type(exc).__name__}): "
                          f"{what or 'rerun the stage that writes it'}") from None
    return check(value, schema, path, what=what)


def check(value: Any, schema: Any, path: str | os.PathLike, *, what: str | None = None) -> Any:
    """``value`` (read from ``path``) if it fits ``schema``; one RunDirError otherwise."""
    found = problems(value, schema)
    if found:
        raise RunDirError(f"{path} is damaged ({'; '.join(found[:3])}): {what or 'rerun the stage that writes it'}")
    return value


HISTORY = {"*": [NUMBER]}
# A task's test metric (an autoencoder's AUC, a regression's MAE) with its interval
TASK_METRIC = {"metric": str, "value": NUMBER, "ci95": INTERVAL, "?partial_auc": (FRACTION, None),
               "?roc": ({"fpr": [FRACTION], "tpr": [FRACTION]}, None), "*": Any}
TRAIN_JSON = {
    "?model": str, "?task": str, "?test_accuracy": (FRACTION, None), "?history": HISTORY,
    "?test_metric": (TASK_METRIC, None),
    "config": {"seed": int, "dataset": str, "*": Any},
    "data": {"name": str, "sha256": SHA256, "preprocessing": dict, "*": Any},
    "*": Any,
}
GATE = {"passed": bool, "?verdict": (str, None), "*": Any}
MICRO = {"?arena_bytes": COUNT, "?flash_bytes": COUNT, "?top1_agreement": (FRACTION, None), "*": Any}
VERIFY_ARTIFACT = {
    "artifact": str, "mode": str, "format": str, "passed": bool, "size_bytes": COUNT, "metric": str,
    "metric_value": NUMBER, "metric_drop": NUMBER, "top1_agreement": (FRACTION, None),
    "?accuracy_ci95": (INTERVAL, None), "?top1_agreement_ci95": (INTERVAL, None),
    "?metric_drop_ci95": (INTERVAL, None), "gates": {"*": GATE}, "?micro": (MICRO, None),
    "?metric_ci95": (INTERVAL, None), "?decision_agreement": (FRACTION, None),
    "?decision_agreement_ci95": (INTERVAL, None), "*": Any,
}
VERIFY_JSON = {"artifacts": [VERIFY_ARTIFACT], "?keras": {"*": (NUMBER, TASK_METRIC)}, "*": Any}
BENCH_RESULT = {"artifact": str, "p50_ms": NON_NEGATIVE, "?p90_ms": (NON_NEGATIVE, None), "?threads": (int, None),
                "?p50_spread_ms": (NON_NEGATIVE, None), "?p50_ci95_ms": (INTERVAL, None), "*": Any}
# quantize.json's / convert.json's recovery record, where it says a mix was written
SCORE = {"?top1_agreement": (FRACTION, None), "*": Any}
RECOVERED = {"status": str, "artifact": str, "raised": [{"op": str, "precision": str, "*": Any}],
             "raisable_layers": COUNT, "?full_int8": (SCORE, None), "?validation": (SCORE, None), "*": Any}
BENCH_JSON = {"results": [BENCH_RESULT], "*": Any}
CONSTRAINTS = {"?target": (str, None), "?max_accuracy_drop": (NUMBER, None),
               "?max_latency_ms": (NUMBER, None), "?max_size_kb": (NUMBER, None),
               "?max_ram_kb": (NUMBER, None), "?max_flash_kb": (NUMBER, None), "*": Any}
CONFIG_JSON = {"?constraints": CONSTRAINTS, "*": Any}
MANIFEST_JSON = {"?stages": dict, "?artifacts": {"*": SHA256}, "?versions": dict, "*": Any}
