"""``pipeline search``: the command's work on its directory (checked, locked, resumed)."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import time
from dataclasses import asdict
from pathlib import Path

from pipeline.core.errors import PipelineError, UsageError
from pipeline.core.fsutil import make_dirs, read_json, write_json
from pipeline.core.rundir import safe_name
from pipeline.search.space import MARKER, RESUMABLE, SPACES, SearchOptions, _build, task_of
from pipeline.search.summary import _report, _trial_rows
from pipeline.search.timer import FINAL_ROUNDS, Timer, _pool_timings, _relative_budget
from pipeline.search.trials import _stop_search, _trial_table, _tuner
from pipeline.search.winner import _baseline, _choose, _finish_winner, _int8_test_comparison


def resumes(out: Path, options: SearchOptions) -> bool:
    """Whether ``out`` holds a search with these options (which ``search`` would resume)."""
    before = _recorded_options(Path(out))
    return before is not None and all(before.get(k) == v for k, v in asdict(options).items() if k not in RESUMABLE)


def _recorded_options(out: Path) -> dict | None:
    try:
        before = read_json(out / "search_options.json")
    except (OSError, ValueError):
        return None
    return before if isinstance(before, dict) else None


def search(options: SearchOptions, out: Path) -> dict:
    """Run (or resume) the search in ``out``; return what ``search.json`` holds."""
    options.validate()
    from pipeline.core.backend import import_keras
    from pipeline.core.rundir import locked
    from pipeline.data.loaders import load_dataset

    out = Path(out)
    _check_search_dir(out, options)  # before any work: a bad --out is one line at once
    created = not out.exists()
    make_dirs(out)
    # One search per directory, its lock taken before the heavy imports and the data set, so a
    # second search there is refused within seconds; in a chief/worker search each worker holds
    # its own lock there.
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "chief")
    lock = ".lock" if tuner_id == "chief" else f".lock-{safe_name(tuner_id)}"
    try:
        with locked(out, name=lock, what="search directory"):
            _check_search_dir(out, options)  # again, now that no other search can change it
            import_keras()
            data = load_dataset(options.dataset, seed=options.seed, task=task_of(options))
            _check_builds(options, data)
            write_json(out / "search_options.json", asdict(options))
            return _search_locked(options, data, out)
    except PipelineError:
        if created and {p.name for p in out.iterdir()} <= {lock}:  # refused before any work: no folder left
            with contextlib.suppress(OSError):
                (out / lock).unlink(missing_ok=True)
                out.rmdir()
        raise


def _search_locked(options: SearchOptions, data, out: Path) -> dict:
    timer = Timer(options, data.split("val")[0][0], out)
    relative = None
    if options.max_latency_ratio is not None:  # the budget in ms, from the zoo model's own p50 here
        relative = _relative_budget(options, data, out, timer)
        options = dataclasses.replace(options, max_latency_ms=relative["max_latency_ms"])
        timer.options = options
    try:  # a search directory is untrusted: its saved tuner state may be anything
        with contextlib.redirect_stdout(io.StringIO()):  # KerasTuner prints "Reloading Tuner from …"
            tuner, screen = _tuner(options, data, out, timer)
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise UsageError(f"{out / 'tuner'} holds a damaged search state ({type(exc).__name__}): "
                         f"choose a new --out") from None
    started = time.perf_counter()
    try:
        tuner.search(verbose=0)  # one line a trial instead (run_trial)
    except _stop_search() as stop:
        raise stop.error from None
    if not tuner.is_chief():
        return {"worker": True}
    trials = _trial_table(tuner)
    pooled = _pool_timings(trials, screen, options)
    summary = {"options": asdict(options), "search_seconds": round(time.perf_counter() - started, 1),
               "timing": timer.where(), "trials": trials, "screened": screen.summary(),
               "pooled_timings": pooled, **({"relative_budget": relative} if relative else {}),
               "front": [row["trial"] for row in _trial_rows(trials, None) if row["pareto"]]}
    feasible = [t for t in trials if t["status"] == "COMPLETED" and t["metrics"].get("feasible")]
    baseline = _baseline(options, out)
    artifacts = [Path(baseline["run_dir"]) / "model_int8.tflite"]
    if feasible:
        best, summary["rescoring"] = _choose(feasible, options, data)
        summary["best"] = _finish_winner(best, options, data, out)
        artifacts.append(Path(summary["best"]["artifact"]))
    # side by side, alternating, in one place: the ratio is what the budget question is about
    medians, rounds = timer.median_p50(artifacts, FINAL_ROUNDS)
    for entry, median, measured in zip((baseline, summary.get("best")), medians, rounds):
        entry.update(p50_ms=median, p50_ms_rounds=measured)
    summary["baseline"] = baseline
    if summary.get("best"):
        best, task = summary["best"], task_of(options)
        summary["comparison"] = {
            "p50_ratio": best["p50_ms"] / baseline["p50_ms"],
            **({"test_accuracy_difference": best["test_accuracy"] - baseline["test_accuracy"]} if task == "classifier"
               else {"test_metric_difference": best["test_metric"]["value"] - baseline["test_metric"]["value"]}),
            "int8_test": _int8_test_comparison(artifacts, data, task)}
    write_json(out / MARKER, summary)
    _report(summary, out)
    return summary


def _check_builds(options: SearchOptions, data) -> None:
    """Every combination of the model's builder options builds for this data: a space that
    cannot is one error now, not failed trials later."""
    import itertools

    from pipeline.core.backend import import_keras

    keras = import_keras()
    space = options.hyperparameters()
    names = list(SPACES[options.model])
    for combination in itertools.product(*(space[name] for name in names)):
        values = dict(zip(names, combination))
        try:
            _build(options.model, data, values)
        except ValueError as exc:
            shown = ", ".join(f"{k}={v}" for k, v in values.items())
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"search space: {options.model} with {shown} does not build for "
                             f"{options.dataset} inputs of shape {'×'.join(map(str, data.input_shape))} ({reason}); "
                             f"leave that combination out with --space") from None
        finally:
            keras.backend.clear_session()


def _check_search_dir(out: Path, options: SearchOptions) -> None:
    """A new directory, or one this search started (the same options: it resumes)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory")
    state = out / "search_options.json"
    if out.is_dir() and any(p.name not in (".lock",) and not p.name.startswith(".lock-") for p in out.iterdir()):
        if state.is_symlink() or not state.is_file():
            raise UsageError(f"{out} is not empty and holds no search: choose a new --out")
        if not resumes(out, options):
            before = _recorded_options(out)
            if before is None:
                raise UsageError(f"{state} is unreadable: choose a new --out")
            changed = sorted(k for k, v in asdict(options).items() if k not in RESUMABLE and before.get(k) != v)
            raise UsageError(f"{out} holds a search with other options ({', '.join(changed)}): "
                             f"resume it with the same ones, or choose a new --out")
