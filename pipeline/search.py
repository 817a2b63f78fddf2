"""``pipeline search``: the most accurate model within a latency/size/RAM budget, measured.

Each trial (a KerasTuner trial, so the search resumes from its directory and can run as a
chief with workers) trains a zoo model variant briefly, optionally prunes it, quantizes it
(int8 by default), times it with the same code as ``pipeline bench`` (in a fresh process
that loads only edge_runtime, or on ``--device`` over SSH) and scores its **int8 artifact**
on the validation split. The objective is that accuracy when the artifact fits the budgets,
and below every fitting trial when it does not. Before a candidate is trained, its untrained
twin is measured (``Screen``): architectures over budget are never trained. The test split
is used once: for the winner (made a normal run directory that later stages continue from)
and for the zoo model's default, trained in the same search as the baseline, and the two are
timed side by side.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime.errors import CodedError
from pipeline.config import ConstraintsSection, DataSection, SearchSection
from pipeline.errors import PipelineError, UsageError
from pipeline.fsutil import (append_line, make_dirs, read_json, remove_file, write_bytes, write_json, write_npy,
                             write_text)
from pipeline.rundir import safe_name

log = logging.getLogger("pipeline")

# Per zoo model: builder options to explore (strings where the builder takes a tuple).
SPACES: dict[str, dict[str, list]] = {
    "mnist_cnn": {"filters": ["8", "8-16", "16-32", "32-64"], "dense": [32, 64], "stem_pool": [1, 2]},
    "mlp": {"hidden": ["32", "64", "128-64"]},
    "resnet8": {"filters": ["8-16-32", "16-32-64"]},
    "ds_cnn": {"width": [32, 64], "blocks": [2, 4]},
    "mobilenet_v1": {"alpha": [0.25, 0.5]},
}
# Hyperparameter values -> the zoo builder's keyword arguments.
_BUILDER_ARGS = {
    "mnist_cnn": lambda v: {"filters": _widths(v["filters"]), "dense": v["dense"], "stem_pool": v["stem_pool"]},
    "mlp": lambda v: {"hidden": _widths(v["hidden"])},
    "resnet8": lambda v: {"filters": _widths(v["filters"])},
    "ds_cnn": lambda v: {"filters": v["width"], "blocks": v["blocks"]},
    "mobilenet_v1": lambda v: {"alpha": v["alpha"]},
}
# Training and deployment choices every model shares.
COMMON_SPACE: dict[str, list] = {
    "learning_rate": [1e-3, 3e-3], "optimizer": ["adam", "rmsprop"], "batch_size": [32, 64],
    "sparsity": [0.0, 0.5], "quantization": ["int8"],
}
OPTIMIZERS = ("adam", "rmsprop")  # of pipeline.train's
QUANTIZATIONS = ("int8", "int16x8")  # integer models: what an MCU or an NPU runs
MARKER = "search.json"
# A trial timed within this fraction of the latency budget is timed twice more (median of
# three): microsecond latencies drift by about that much between processes.
NEAR_BUDGET = 0.2
FINAL_ROUNDS = 3  # the baseline and the winner, timed alternately, median of each
# A candidate whose untrained twin is over a budget by more than this is not trained: a
# trial's trained artifact times within a few percent of its twin (the kernels do not depend
# on the weights), so this only spares trials that would be over budget anyway.
SCREEN_TOLERANCE = 0.05
SCREEN_DRAWS = 2000  # random draws per trial before the oracle gives up finding one that fits
# Draws per trial spent looking for a fitting architecture no trial has had yet, before one
# already tried gets new training choices: the budget question is mostly about architectures.
NEW_ARCHITECTURE_DRAWS = 200
# Options a resumed search may change: they do not change what a finished trial measured.
RESUMABLE = ("trials", "time_limit_s", "rescore", "ssh_options", "remote_root")
# Near-tied trials are re-scored by this many folds over train+validation (SearchSection.rescore).
RESCORE_FOLDS = 3


def _widths(text: str) -> tuple[int, ...]:
    parts = str(text).split("-")
    if not all(p.isdigit() and 1 <= int(p) <= 4096 for p in parts) or len(parts) > 8:
        raise ValueError("layer widths joined by '-', each 1..4096, e.g. 16-32")
    return tuple(int(p) for p in parts)


def _one_of(allowed):
    def check(value):
        if value not in allowed:
            raise ValueError(f"one of {', '.join(allowed)}")
        return value
    return check


def _number(kind, low, high):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise ValueError(f"{'an integer' if kind is int else 'a number'} in [{low:g}, {high:g}]")
        if not low <= value <= high:
            raise ValueError(f"in [{low:g}, {high:g}]")
        return kind(value)
    return check


# Every hyperparameter's check: the value as the trial uses it, or ValueError saying what fits.
_VALUES = {
    "filters": lambda v: "-".join(map(str, _widths(v))), "hidden": lambda v: "-".join(map(str, _widths(v))),
    "dense": _number(int, 1, 4096), "stem_pool": _number(int, 1, 8), "width": _number(int, 1, 4096),
    "blocks": _number(int, 1, 16), "alpha": _number(float, 0.05, 2.0),
    "learning_rate": _number(float, 1e-6, 1.0), "optimizer": _one_of(OPTIMIZERS),
    "batch_size": _number(int, 1, 4096), "sparsity": _number(float, 0.0, 0.9),
    "quantization": _one_of(QUANTIZATIONS),
}


@dataclass
class SearchOptions:
    """Defaults are the config's ``search`` and ``constraints`` sections."""

    model: str = "mnist_cnn"
    dataset: str = DataSection.dataset
    trials: int = SearchSection.trials
    time_limit_s: float | None = SearchSection.time_limit_s
    epochs: int = SearchSection.epochs
    max_latency_ms: float | None = ConstraintsSection.max_latency_ms
    max_size_kb: float | None = ConstraintsSection.max_size_kb
    max_ram_kb: float | None = ConstraintsSection.max_ram_kb
    seed: int = DataSection.seed
    bench_seconds: float = SearchSection.bench_seconds
    rescore: int = SearchSection.rescore
    max_latency_ratio: float | None = SearchSection.max_latency_ratio
    device: str | None = SearchSection.device
    # hyperparameter -> values, replacing the model's defaults (SPACES, COMMON_SPACE)
    space: dict[str, list] = field(default_factory=dict)
    ssh_options: list[str] = field(default_factory=list)
    remote_root: str = "~/.edge-runtime"

    def validate(self) -> None:
        from pipeline.limits import check

        if self.model not in SPACES:
            from pipeline.errors import unknown_name

            raise unknown_name("searchable model", self.model, SPACES)
        check("epochs", self.epochs)
        check("seed", self.seed)
        check("max_latency_ms", self.max_latency_ms, label="--max-latency-ms")
        check("max_size_kb", self.max_size_kb, label="--max-size-kb")
        check("max_ram_kb", self.max_ram_kb, label="--max-ram-kb")
        check("min_seconds", self.bench_seconds, label="--bench-seconds")
        if self.max_latency_ratio is not None:
            ratio = self.max_latency_ratio
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.01 <= ratio <= 100:
                raise UsageError(f"--max-latency-ratio must lie in [0.01, 100], got {ratio}")
            if self.max_latency_ms is not None:
                raise UsageError("give --max-latency-ms or --max-latency-ratio, not both")
        if not 0 <= self.rescore <= 50:
            raise UsageError(f"--rescore must lie in [0, 50], got {self.rescore}")
        if not 1 <= self.trials <= 10_000:
            raise UsageError(f"--trials must lie in [1, 10000], got {self.trials}")
        if self.time_limit_s is not None and not 0 < self.time_limit_s <= 7 * 24 * 3600:
            raise UsageError(f"--time-limit must lie in (0, 604800] seconds, got {self.time_limit_s}")
        if self.device is not None:
            from pipeline.remote import check_remote_dir, parse_device

            parse_device(self.device)
            check_remote_dir(self.remote_root)
        self.hyperparameters()

    def hyperparameters(self) -> dict[str, list]:
        """The search space: the model's defaults with the user's values in their place."""
        space = {**SPACES[self.model], **COMMON_SPACE}
        for name, values in self.space.items():
            if name not in space:
                from pipeline.errors import unknown_name

                raise unknown_name(f"hyperparameter for {self.model}", name, space)
            if not isinstance(values, list) or not values:
                raise UsageError(f"--space {name}: give at least one value")
            checked = []
            for value in values:
                try:
                    checked.append(_VALUES[name](value))
                except (TypeError, ValueError) as exc:
                    raise UsageError(f"--space {name}: {value!r} is not {exc}") from None
            space[name] = list(dict.fromkeys(checked))
        return space


def options_from_config(config) -> SearchOptions:
    """The search ``pipeline run`` does: the config's model, data and budgets."""
    section, constraints = config.search, config.constraints
    return SearchOptions(model=config.train.model, dataset=config.data.dataset, seed=config.data.seed,
                         trials=section.trials, time_limit_s=section.time_limit_s, epochs=section.epochs,
                         bench_seconds=section.bench_seconds, rescore=section.rescore, device=section.device,
                         max_latency_ratio=section.max_latency_ratio,
                         space=dict(section.space),
                         max_latency_ms=constraints.max_latency_ms, max_size_kb=constraints.max_size_kb,
                         max_ram_kb=constraints.max_ram_kb)


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


def describe(summary: dict) -> str:
    """One line for a report: what the search tried and what it chose."""
    done = sum(t["status"] == "COMPLETED" for t in summary["trials"])
    baseline, best = summary["baseline"], summary.get("best")
    text = (f"{done} trials ({summary['search_seconds']:.0f} s); {summary['options']['model']} as it comes: "
            f"test accuracy {baseline['test_accuracy']:.2%}, int8 p50 {baseline['p50_ms']:.4f} ms")
    if not best:
        return text + "; no trial fits the budgets"
    values = ", ".join(f"{k}={v}" for k, v in best["hyperparameters"].items())
    text += (f"; chosen trial {best['trial']} ({values}): test accuracy {best['test_accuracy']:.2%}, "
             f"int8 p50 {best['p50_ms']:.4f} ms (×{summary['comparison']['p50_ratio']:.2f})")
    chosen = choice_text(summary)
    return text + (f"; {chosen}" if chosen else "")


def choice_text(summary: dict) -> str | None:
    """How the winner was chosen and its margin over the runner-up, with the interval."""
    record = summary.get("rescoring")
    if not record or not summary.get("best"):
        return None
    margin = record.get("margin")
    if record.get("folds"):
        text = (f"re-scored trials {', '.join(r['trial'] for r in record['rescored'])} (within the noise of "
                f"{record['validation_samples']} validation samples) by {record['folds']}-fold cross-validation "
                f"on {record['samples']} samples")
    else:
        text = f"best on {record['validation_samples']} validation samples ({record['reason']})"
    if margin:
        low, high = (100 * v for v in margin["ci95"])
        text += (f"; margin over trial {margin['over']}: {100 * margin['difference']:+.2f} points "
                 f"[{low:+.2f}, {high:+.2f}]")
    return text


def search(options: SearchOptions, out: Path) -> dict:
    """Run (or resume) the search in ``out``; return what ``search.json`` holds."""
    options.validate()
    from pipeline.backend import import_keras
    from pipeline.data import load_dataset

    out = Path(out)
    _check_search_dir(out, options)  # before any work: a bad --out is one line at once
    import_keras()
    data = load_dataset(options.dataset, seed=options.seed)
    _check_builds(options, data)
    make_dirs(out)
    from pipeline.rundir import locked

    # one search per directory; in a chief/worker search each worker holds its own lock there
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "chief")
    lock = ".lock" if tuner_id == "chief" else f".lock-{safe_name(tuner_id)}"
    with locked(out, name=lock, what="search directory"):
        _check_search_dir(out, options)  # again, now that no other search can change it
        write_json(out / "search_options.json", asdict(options))
        return _search_locked(options, data, out)


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
        summary["comparison"] = {
            "p50_ratio": summary["best"]["p50_ms"] / baseline["p50_ms"],
            "test_accuracy_difference": summary["best"]["test_accuracy"] - baseline["test_accuracy"],
            "int8_test": _int8_test_comparison(artifacts, data)}
    write_json(out / MARKER, summary)
    _report(summary, out)
    return summary


BUDGET_FILE = "latency_budget.json"
REFERENCE_TIMINGS = 5  # the zoo model's untrained twin, timed this often (median)


def _relative_budget(options: SearchOptions, data, out: Path, timer: "Timer") -> dict:
    """``max_latency_ratio`` × the p50 of the zoo model as it comes (its architecture with its
    initial weights, int8: latency does not depend on the weights), timed where the trials are
    timed, at the start; kept in ``latency_budget.json`` so a resumed search keeps its budget
    (a file that does not hold one for this ratio is measured again)."""
    import hashlib

    from pipeline.backend import import_keras
    from pipeline.tflite import to_tflite
    from pipeline.train import zoo_spec

    path = out / BUDGET_FILE
    try:
        recorded = read_json(path) if path.is_file() and not path.is_symlink() else None
    except (OSError, ValueError):
        recorded = None
    if isinstance(recorded, dict) and recorded.get("ratio") == options.max_latency_ratio:
        timings = _timings(recorded.get("timings_ms"))
        if len(timings) == REFERENCE_TIMINGS:
            reference = float(np.median(timings))
            return {"ratio": options.max_latency_ratio, "reference": recorded.get("reference"),
                    "timings_ms": timings, "reference_p50_ms": reference,
                    "max_latency_ms": options.max_latency_ratio * reference}
    keras = import_keras()
    keras.backend.clear_session()
    model = zoo_spec(options.model).build(tuple(data.input_shape), int(data.num_classes))
    name = hashlib.sha256(f"reference-{options.model}".encode()).hexdigest()[:16]
    artifact = out / "screen" / f"{name}.tflite"
    make_dirs(artifact.parent)
    write_bytes(artifact, to_tflite(model, "int8", calibration=data.split("train")[0][:100]))
    timings = [p50 for _ in range(REFERENCE_TIMINGS) for p50 in timer.p50([artifact])]
    reference = float(np.median(timings))
    record = {"ratio": options.max_latency_ratio, "reference": f"{options.model} as it comes, untrained, int8",
              "timings_ms": timings, "reference_p50_ms": reference,
              "max_latency_ms": options.max_latency_ratio * reference}
    write_json(path, record)
    log.info("latency budget: %.2f × %s's p50 %.4f ms = %.4f ms", options.max_latency_ratio, options.model,
             reference, record["max_latency_ms"])
    return record


def _check_builds(options: SearchOptions, data) -> None:
    """Every combination of the model's builder options builds for this data: a space that
    cannot is one error now, not failed trials later."""
    import itertools

    from pipeline.backend import import_keras

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


class Timer:
    """Int8 p50 latency at batch 1 on one thread, measured as ``pipeline bench`` measures it,
    where the model will run: in a new process that loads only edge_runtime (this process's
    TensorFlow threads would share the cores), or on ``--device`` over SSH."""

    def __init__(self, options: SearchOptions, sample: np.ndarray, out: Path):
        self.options, self.sample = options, np.asarray(sample, dtype=np.float32)
        self.sample_path = out / "timing_sample.npy"
        self.device: dict | None = None

    def where(self) -> dict:
        if self.options.device:
            return {"location": self.options.device, **(self.device or {})}
        from edge_runtime.bench import device_description

        return {"location": "local, a fresh process per measurement", **device_description()}

    def p50(self, artifacts: list[Path]) -> list[float]:
        if self.options.device:
            from pipeline.bench import BenchOptions
            from pipeline.remote import bench_remote

            bench_options = BenchOptions(threads=[1], runs=50, warmup=20, min_seconds=self.options.bench_seconds,
                                         device=self.options.device, ssh_options=self.options.ssh_options)
            report = bench_remote(self.options.device, artifacts, self.sample, bench_options,
                                  self.options.remote_root)
            self.device = report["device"]
            return [row["p50_ms"] for row in report["results"]]
        if not self.sample_path.is_file() or self.sample_path.is_symlink():
            write_npy(self.sample_path, self.sample)
        return [self._fresh_process(path) for path in artifacts]

    def _fresh_process(self, artifact: Path) -> float:
        import subprocess
        import sys

        command = [sys.executable, "-m", "edge_runtime.cli", "bench", str(artifact), "--json", "--threads", "1",
                   "--warmup", "20", "--warmup-seconds", "0.1", "--runs", "50",
                   "--min-seconds", str(self.options.bench_seconds), "--sample", str(self.sample_path)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        try:
            return float(json.loads(done.stdout.strip().splitlines()[-1])["results"][0]["p50_ms"])
        except (IndexError, KeyError, ValueError):
            reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            raise PipelineError(f"timing {artifact.name} failed: {reason[:200]}") from None

    def median_p50(self, artifacts: list[Path], rounds: int) -> tuple[list[float], list[list[float]]]:
        """Each artifact's median p50 over ``rounds`` interleaved rounds (pipeline.timing,
        as ``pipeline bench`` times; on ``--device``, the order alternating between rounds)."""
        if not self.options.device:
            from pipeline.timing import measure_rounds

            measured = measure_rounds(artifacts, self.sample, threads=[1], warmup=20, runs=50 * rounds,
                                      min_seconds=self.options.bench_seconds * rounds, rounds=rounds)["results"]
            return [row["p50_ms"] for row in measured], [row["p50_rounds_ms"] for row in measured]
        measured: list[list[float]] = [[] for _ in artifacts]
        for index in range(rounds):
            order = list(range(len(artifacts)))[::(-1 if index % 2 else 1)]
            for position, p50 in zip(order, self.p50([artifacts[i] for i in order])):
                measured[position].append(p50)
        return [float(np.median(m)) for m in measured], measured


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


class Screen:
    """A candidate's budgets before it is trained. Latency, size and arena depend on the
    architecture, not on the weights: the candidate built with its initial weights, pruned
    to the same widths and quantized the same way, is measured as a trial would be (once per
    architecture, kept in ``screen.json`` so a resumed search does not measure it again).
    A candidate whose untrained twin is over a budget by more than ``SCREEN_TOLERANCE`` is
    not trained at all; the trial itself still measures the trained artifact."""

    def __init__(self, options: SearchOptions, data, timer: Timer, out: Path):
        self.options, self.data, self.timer = options, data, timer
        self.path, self.dir = out / "screen.json", out / "screen"
        try:
            recorded = read_json(self.path) if self.path.exists() else {}
        except (OSError, ValueError):
            recorded = {}
        self.measured: dict[str, dict] = recorded if isinstance(recorded, dict) else {}

    def summary(self) -> dict:
        over = [key for key, m in self.measured.items() if _screened(m) and m["over"] > SCREEN_TOLERANCE]
        timed = [m["p50_ms"] for m in self.measured.values() if _screened(m)]
        return {"architectures": len(self.measured), "over_budget": len(over), "tolerance": SCREEN_TOLERANCE,
                "fastest_p50_ms": min(timed) if timed else None}

    def p50_ms(self, values: dict) -> float | None:
        """The untrained twin's p50, if it was measured."""
        measured = self.measured.get(architecture(self.options.model, values))
        return measured["p50_ms"] if _screened(measured) else None

    def active(self) -> bool:
        return any(b is not None for b in (self.options.max_latency_ms, self.options.max_size_kb,
                                           self.options.max_ram_kb))

    def fits(self, values: dict) -> bool:
        if not self.active():
            return True
        key = architecture(self.options.model, values)
        if not _screened(self.measured.get(key)):  # new, or damaged
            self.measured[key] = self._measure(values)
            write_json(self.path, self.measured)
        return self.measured[key]["over"] <= SCREEN_TOLERANCE

    def within_budgets(self, values: dict) -> bool:
        """Whether the untrained twin (measured by ``fits``) is within every budget itself."""
        measured = self.measured.get(architecture(self.options.model, values))
        return not self.active() or (_screened(measured) and measured["over"] <= 0.0)

    def timings(self, values: dict) -> list[float]:
        """Every p50 the untrained twin was timed at (none if it was not)."""
        measured = self.measured.get(architecture(self.options.model, values))
        return _timings(measured.get("p50_ms_measured")) if _screened(measured) else []

    def _measure(self, values: dict) -> dict:
        import hashlib

        from pipeline.backend import import_keras
        from pipeline.tflite import to_tflite

        keras = import_keras()
        keras.backend.clear_session()
        model = _pruned(_build(self.options.model, self.data, values), values["sparsity"])
        rng = np.random.default_rng(0)
        for variable in model.weights:  # zero biases would be stored once, shared: not the real size
            if variable.path.endswith("bias"):
                variable.assign(rng.normal(0.0, 0.01, tuple(variable.shape)).astype(np.float32))
        make_dirs(self.dir)
        name = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]
        artifact = self.dir / f"{name}.tflite"
        calibration = self.data.split("train")[0][:100]
        write_bytes(artifact, to_tflite(model, values["quantization"], calibration=calibration))
        metrics = _budget_metrics(artifact, self.options, self.timer)
        metrics["over"] = max(_over_budget(metrics, self.options).values(), default=0.0)
        shown = ", ".join(f"{k}={values[k]}" for k in (*SPACES[self.options.model], "sparsity", "quantization"))
        log.info("screened %s: p50 %.4f ms, %.1f KiB%s", shown,
                 metrics["p50_ms"], metrics["size_kb"],
                 "" if metrics["over"] <= SCREEN_TOLERANCE else " (over budget: not trained)")
        return metrics


def _screened(entry) -> bool:
    """Whether a ``screen.json`` entry is a measurement (the file may have been edited)."""
    return isinstance(entry, dict) and all(
        isinstance(entry.get(k), (int, float)) and not isinstance(entry.get(k), bool) and np.isfinite(entry[k])
        and entry[k] >= 0 for k in ("over", "p50_ms"))


@functools.cache
def _stop_search():
    from keras_tuner.errors import FatalError

    class StopSearch(FatalError):
        """A pipeline error inside a trial: KerasTuner stops (it retries any other exception)."""

        def __init__(self, error: Exception):
            super().__init__(str(error))
            self.error = error

    return StopSearch


def _tuner(options: SearchOptions, data, out: Path, timer: Timer):
    import keras_tuner
    from keras_tuner.engine.trial import TrialStatus

    from pipeline.tuner_compat import atomic_state_writes, prompt_chief_exit, retry_queue, seed_oracle

    atomic_state_writes()
    prompt_chief_exit()
    screen = Screen(options, data, timer, out)

    class ScreenedOracle(keras_tuner.oracles.RandomSearchOracle):
        """Random candidates, but only those whose untrained twin fits the budgets."""

        def populate_space(self, trial_id):
            """In this order: a new architecture whose untrained twin is within the budgets;
            new training choices for a tried one that is; a new architecture whose twin is
            within ``SCREEN_TOLERANCE`` over them (timed once, its trained artifact may still
            fit); new training choices for such a one. Measured on digits at a third of the
            seed CNN's p50: every trial whose twin was over the budget was over it trained."""
            tried = {architecture(options.model, t.hyperparameters.values) for t in self.trials.values()}
            rejected, found = set(), {}
            for draw in range(SCREEN_DRAWS):
                values = self._random_values()
                if values is None:
                    break
                digest = self._compute_values_hash(values)
                if digest in rejected:
                    continue
                if not screen.fits(values):
                    rejected.add(digest)
                    continue
                new = architecture(options.model, values) not in tried
                rank = (0 if new else 1) if screen.within_budgets(values) else (2 if new else 3)
                if rank == 0:
                    return {"status": TrialStatus.RUNNING, "values": values}
                found.setdefault(rank, values)
                if draw >= NEW_ARCHITECTURE_DRAWS and found:
                    break
            chosen = found[min(found)] if found else None
            if chosen:
                return {"status": TrialStatus.RUNNING, "values": chosen}
            return {"status": TrialStatus.STOPPED, "values": None}  # nothing left that fits

        def reload(self):
            super().reload()
            # A kill between a new trial's own file and the oracle's leaves a RUNNING trial the
            # oracle does not know is running: run it again like the interrupted ones.
            queue = retry_queue(self)
            for trial_id, trial in sorted(self.trials.items()):
                if trial.status == TrialStatus.RUNNING and trial_id not in queue:
                    queue.append(trial_id)

    class EdgeTuner(keras_tuner.Tuner):
        """Trials that end in a measured int8 artifact (see run_trial)."""

        def run_trial(self, trial, *args, **kwargs):
            if options.time_limit_s and time.perf_counter() - self.started > options.time_limit_s:
                self.oracle.max_trials = len(self.oracle.trials)  # no new trials after this one
            try:
                return _run_trial(trial.hyperparameters, options, data, Path(self.get_trial_dir(trial.trial_id)),
                                  timer, screen.p50_ms(trial.hyperparameters.values))
            except CodedError as exc:  # the user's to fix (a device that is down): not a failed trial
                raise _stop_search()(exc) from None

        def on_search_begin(self):
            self.started = time.perf_counter()
            super().on_search_begin()

        def is_chief(self) -> bool:
            return os.environ.get("KERASTUNER_TUNER_ID", "chief") == "chief"

    space = keras_tuner.HyperParameters()
    for name, values in options.hyperparameters().items():
        space.Choice(name, values)
    oracle = ScreenedOracle(objective=keras_tuner.Objective("score", "max"), max_trials=options.trials,
                            hyperparameters=space, seed=options.seed,
                            max_consecutive_failed_trials=options.trials)
    seed_oracle(oracle, options.seed)
    return EdgeTuner(oracle=oracle, directory=str(out), project_name="tuner", overwrite=False), screen


def _build(model: str, data, values: dict):
    """The zoo model with these hyperparameters' builder options, for this data set."""
    from pipeline.train import zoo_spec

    return zoo_spec(model).build(tuple(data.input_shape), int(data.num_classes), **_BUILDER_ARGS[model](values))


def _train_candidate(values: dict, options: SearchOptions, data, epochs: int, *, with_val: bool = False):
    """A model with these hyperparameters, trained (and pruned, fine-tuned) from scratch; on
    the training split, or with the validation split too once it has done its job."""
    x_train, y_train = data.split("train")
    if with_val:
        x_val, y_val = data.split("val")
        x_train, y_train = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    return _fit_candidate(values, options, data, x_train, y_train, epochs)


def _fit_candidate(values: dict, options: SearchOptions, data, x_train, y_train, epochs: int):
    from pipeline.backend import import_keras, seed_everything
    from pipeline.batchnorm import recalibrate_batchnorm
    from pipeline.train import compile_for_task, make_optimizer, recipe_for, scheduled_rate

    keras = import_keras()
    keras.backend.clear_session()
    seed_everything(options.seed)
    model = _build(options.model, data, values)
    # the learning-rate schedule of the baseline's recipe: candidates and baseline train alike
    rate = scheduled_rate(keras, values["learning_rate"], recipe_for(options.model)["lr_schedule"],
                          len(y_train), values["batch_size"], epochs)
    compile_for_task(model, "classifier", make_optimizer(keras, values["optimizer"], rate))
    model.fit(x_train, y_train, batch_size=values["batch_size"], epochs=epochs, verbose=0, shuffle=True)
    if values["sparsity"]:
        model = _pruned(model, values["sparsity"])
        compile_for_task(model, "classifier", make_optimizer(keras, values["optimizer"], values["learning_rate"] / 3))
        model.fit(x_train, y_train, batch_size=values["batch_size"], epochs=2, verbose=0, shuffle=True)
    recalibrate_batchnorm(model, x_train, seed=options.seed)
    return model


def architecture(model: str, values: dict) -> str:
    """What decides a candidate's latency, size and arena: its shape and its quantization."""
    return json.dumps({k: values[k] for k in (*SPACES[model], "sparsity", "quantization")}, sort_keys=True)


def _pruned(model, sparsity: float):
    """``model`` with its filters/units structurally removed at ``sparsity`` (0: as it is)."""
    if not sparsity:
        return model
    from pipeline.structured import shrink

    try:
        return shrink(model, sparsity)
    except UsageError:
        return model  # nothing prunable: the candidate goes on unpruned


def _run_trial(hp, options: SearchOptions, data, trial_dir: Path, timer: Timer,
               untrained_p50_ms: float | None = None) -> dict:
    """Train, prune, quantize and measure one candidate; its files stay in ``trial_dir``."""
    from edge_runtime import load
    from pipeline.modelio import save_model
    from pipeline.tflite import to_tflite

    values = hp.values
    finished = _finished_measurement(trial_dir, values)
    if finished is not None:  # measured before a kill stopped KerasTuner from recording it
        log.info("trial %s: measured before the search was stopped; not run again", trial_dir.name)
        _log_trial_run(trial_dir, once=True)
        return finished
    (x_train, _), (x_val, y_val) = data.split("train"), data.split("val")
    model = _train_candidate(values, options, data, options.epochs)
    make_dirs(trial_dir)
    save_model(model, trial_dir / "model.keras")
    artifact = trial_dir / f"model_{values['quantization']}.tflite"
    write_bytes(artifact, to_tflite(model, values["quantization"], calibration=x_train[:300]))
    probabilities = load(artifact).predict(x_val)
    metrics = {"val_accuracy": float(np.mean(probabilities.argmax(-1) == y_val)),
               "val_log_loss": float(np.mean(_log_losses(probabilities, y_val))),
               **_budget_metrics(artifact, options, timer, untrained_p50_ms)}
    measured = metrics.pop("p50_ms_measured")
    over = _over_budget(metrics, options)
    metrics.update(feasible=float(not over),
                   score=metrics["val_accuracy"] - (1.0 + sum(over.values()) if over else 0.0))
    write_json(trial_dir / "measurement.json", {"hyperparameters": values, "metrics": metrics,
                                                "p50_ms_measured": measured, "over_budget": over,
                                                "tuner_id": os.environ.get("KERASTUNER_TUNER_ID", "chief")})
    _log_trial_run(trial_dir)
    log.info("trial %s: validation accuracy %.2f%%, p50 %.4f ms, %.1f KiB%s", trial_dir.name.removeprefix("trial_"),
             metrics["val_accuracy"] * 100, metrics["p50_ms"], metrics["size_kb"], ", over budget" if over else "")
    return metrics


def _log_trial_run(trial_dir: Path, once: bool = False) -> None:
    """Append the trial to ``trials.log`` (every run of a trial, so a rerun shows); with
    ``once``, only if a kill came between its measurement and this line."""
    record = trial_dir.parent / "trials.log"
    if once and record.is_file() and trial_dir.name in record.read_text(encoding="utf-8", errors="replace").split()[0::2]:
        return
    append_line(record, f"{trial_dir.name} {os.getpid()}")


def _finished_measurement(trial_dir: Path, values: dict) -> dict | None:
    """A trial's recorded metrics, if it finished measuring with these very hyperparameters
    (the trial directory is untrusted: anything else is measured again)."""
    path = trial_dir / "measurement.json"
    try:
        recorded = read_json(path) if path.is_file() and not path.is_symlink() else None
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or recorded.get("hyperparameters") != values:
        return None
    metrics = recorded.get("metrics")
    needed = ("val_accuracy", "val_log_loss", "p50_ms", "size_kb", "feasible", "score")
    if not isinstance(metrics, dict) or not all(
            isinstance(metrics.get(k), (int, float)) and not isinstance(metrics.get(k), bool)
            and np.isfinite(metrics[k]) for k in needed):
        return None
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _budget_metrics(artifact: Path, options: SearchOptions, timer: Timer, expected_p50_ms: float | None = None) -> dict:
    """What the budgets are about: p50, size and, with an arena budget, TFLite Micro's
    measured arena. The p50 is the median of three timings when the first is near the latency
    budget or far from ``expected_p50_ms`` (its untrained twin's: a disturbed timing)."""
    p50s = timer.p50([artifact])
    near = options.max_latency_ms and abs(p50s[0] / options.max_latency_ms - 1.0) < NEAR_BUDGET
    if near or (expected_p50_ms and abs(p50s[0] / expected_p50_ms - 1.0) > NEAR_BUDGET):
        p50s += timer.p50([artifact]) + timer.p50([artifact])
    metrics = {"p50_ms": float(np.median(p50s)), "p50_ms_measured": p50s, "size_kb": artifact.stat().st_size / 1024}
    if options.max_ram_kb is not None:
        from pipeline.micro import run_micro

        metrics["arena_kb"] = run_micro(artifact).arena_bytes / 1024
    return metrics


def _timings(value) -> list[float]:
    """A recorded list of p50s, if it is one (the files it comes from are untrusted)."""
    if not isinstance(value, list) or not 0 < len(value) <= 1000:
        return []
    valid = all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0 for v in value)
    return [float(v) for v in value] if valid else []


def _pool_timings(trials: list[dict], screen: "Screen", options: SearchOptions) -> dict[str, dict]:
    """Which trials fit the latency budget, decided per architecture on all its timings.

    Latency depends on the architecture, not on the weights, but one architecture timed near
    the budget lands on either side of it from one process to the next (measured on digits:
    0.0151 and 0.0158 ms for one architecture in two trials of a 0.0154 ms budget). So each
    finished trial's ``feasible`` is decided again on the median of every timing of its
    architecture: its untrained twin's and every trial's that has it. Its own p50 stays in
    ``p50_ms``; the pooled one is ``p50_ms_pooled``. Returns each architecture's pool."""
    timings: dict[str, list[float]] = {}
    for trial in trials:
        if not _timed(trial):
            continue
        key = architecture(options.model, trial["hyperparameters"])
        if key not in timings:
            timings[key] = screen.timings(trial["hyperparameters"])
        timings[key] += _trial_timings(trial)
    pools = {key: {"p50_ms": float(np.median(v)), "timings": len(v), "range_ms": [min(v), max(v)]}
             for key, v in timings.items() if v}
    for trial in trials:
        pool = pools.get(architecture(options.model, trial["hyperparameters"]))
        if pool is None or not _timed(trial):
            continue
        metrics = trial["metrics"]
        metrics["p50_ms_pooled"] = pool["p50_ms"]
        metrics["feasible"] = float(not _over_budget({**metrics, "p50_ms": pool["p50_ms"]}, options))
    return pools


def _timed(trial: dict) -> bool:
    return trial["status"] == "COMPLETED" and all(k in trial["metrics"] for k in ("p50_ms", "size_kb"))


def _trial_timings(trial: dict) -> list[float]:
    """The trial's own p50s, from its measurement (its median alone where that is unreadable)."""
    path = Path(trial["dir"]) / "measurement.json"
    try:
        recorded = read_json(path) if path.is_file() and not path.is_symlink() else {}
    except (OSError, ValueError):
        recorded = {}
    own = _timings(recorded.get("p50_ms_measured")) if isinstance(recorded, dict) else []
    if own and recorded.get("hyperparameters") == trial["hyperparameters"]:
        return own
    p50 = trial["metrics"]["p50_ms"]
    return [float(p50)] if isinstance(p50, (int, float)) and np.isfinite(p50) and p50 > 0 else []


def _over_budget(metrics: dict, options: SearchOptions) -> dict[str, float]:
    """Each exceeded budget and by how much (0.1: 10% over)."""
    over = {}
    for name, value, budget in (("latency", metrics["p50_ms"], options.max_latency_ms),
                                ("size", metrics["size_kb"], options.max_size_kb),
                                ("arena", metrics.get("arena_kb"), options.max_ram_kb)):
        if budget is not None and value > budget:
            over[name] = value / budget - 1.0
    return over


def _trial_table(tuner) -> list[dict]:
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        metrics = {name: trial.metrics.get_last_value(name) for name in trial.metrics.metrics}
        rows.append({"trial": trial_id, "status": str(trial.status), "hyperparameters": trial.hyperparameters.values,
                     "metrics": metrics, "dir": str(Path(tuner.get_trial_dir(trial_id)))})
    return rows


def _finish_winner(best: dict, options: SearchOptions, data, out: Path) -> dict:
    """The winner retrained with its hyperparameters for twice the trial epochs on the training
    and validation splits (selection is done: the search ranks on short trainings), as a
    normal run directory (test accuracy: the test split's one use), quantized like any run."""
    from pipeline.import_model import import_model
    from pipeline.modelio import save_model
    from pipeline.quantize import QuantizeOptions, quantize

    final = save_model(_train_candidate(best["hyperparameters"], options, data, 2 * options.epochs,
                                        with_val=True), out / "winner.keras")
    run_dir, metrics = import_model(final, dataset=options.dataset, seed=options.seed,
                                    out=out / "best", runs_root=out)
    mode = best["hyperparameters"]["quantization"]
    quantize(run_dir, QuantizeOptions(modes=[mode], recover=False))
    artifact = run_dir / f"model_{mode}.tflite"
    return {"trial": best["trial"], "run_dir": str(run_dir), "artifact": str(artifact),
            "hyperparameters": best["hyperparameters"], "final_epochs": 2 * options.epochs,
            "val_accuracy": best["metrics"]["val_accuracy"], "test_accuracy": metrics["test_accuracy"],
            "size_kb": artifact.stat().st_size / 1024}


def _choose(feasible: list[dict], options: SearchOptions, data) -> tuple[dict, dict]:
    """The winner among the fitting trials, and how it was chosen.

    The most accurate on validation, unless other trials are within its noise (the interval
    of their difference reaches zero: on digits' 144 validation images that is about ±4
    points): then the best ``options.rescore`` of those are re-scored by ``RESCORE_FOLDS``-fold
    cross-validation over train+validation (every sample held out once, ten times the
    validation split) and the most accurate there wins. Ties on accuracy go to the lower log
    loss, a finer reading of the same samples."""
    from pipeline.stats import difference_ci95, paired_drop, wilson, within_noise

    ranked = sorted(feasible, key=lambda t: (-t["metrics"]["val_accuracy"], t["metrics"]["val_log_loss"]))
    n_val = len(data.split("val")[1])
    top = ranked[0]["metrics"]["val_accuracy"]
    near = [t for t in ranked if within_noise(top, t["metrics"]["val_accuracy"], n_val)]
    record = {"validation_samples": n_val, "within_noise": [t["trial"] for t in near], "folds": 0,
              "rescored": [], "winner": ranked[0]["trial"]}
    chosen = near[:options.rescore]
    if len(chosen) < 2:
        record["reason"] = ("re-scoring is off (--rescore 0)" if len(near) > 1 and options.rescore < 2
                            else "no other fitting trial is within the validation noise of the best")
        if len(ranked) > 1:  # the margin over the runner-up on validation (independent samples here)
            second = ranked[1]["metrics"]["val_accuracy"]
            record["margin"] = {"over": ranked[1]["trial"], "difference": top - second, "on": "validation",
                                "ci95": difference_ci95(top, n_val, second, n_val)}
        return ranked[0], record
    x_train, y_train = data.split("train")
    x_val, y_val = data.split("val")
    x, y = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    folds = np.array_split(np.random.default_rng(options.seed).permutation(len(y)), RESCORE_FOLDS)
    scored = {t["trial"]: _cross_validate(t, options, data, x, y, folds) for t in chosen}
    order = sorted(chosen, key=lambda t: (-scored[t["trial"]]["correct"].mean(), scored[t["trial"]]["log_loss"]))
    for t in chosen:
        correct = scored[t["trial"]]["correct"]
        record["rescored"].append({
            "trial": t["trial"], "val_accuracy": t["metrics"]["val_accuracy"],
            "cv_accuracy": float(correct.mean()), "cv_accuracy_ci95": list(wilson(int(correct.sum()), len(correct))),
            "cv_log_loss": scored[t["trial"]]["log_loss"]})
    winner, runner_up = order[0], order[1]
    margin = paired_drop(scored[winner["trial"]]["correct"], scored[runner_up["trial"]]["correct"])
    record.update(folds=RESCORE_FOLDS, samples=len(y), winner=winner["trial"],
                  margin={"over": runner_up["trial"], "difference": margin["drop"], "ci95": margin["ci95"],
                          "on": f"{RESCORE_FOLDS}-fold cross-validation", "method": margin["method"]})
    if winner["trial"] != ranked[0]["trial"]:
        log.info("re-scoring: trial %s wins over trial %s (validation's best)", winner["trial"], ranked[0]["trial"])
    return winner, record


def _cross_validate(trial: dict, options: SearchOptions, data, x, y, folds) -> dict:
    """The trial's hyperparameters trained on all folds but one, quantized, and scored on the
    held-out one, for each fold: whether each sample was right, and the mean log loss. A
    fold's result is kept in the trial's directory (a killed search does not redo it) and
    read back only if it was made for this very split."""
    from edge_runtime import load
    from pipeline.tflite import to_tflite
    from pipeline.train import recipe_for

    values, trial_dir = trial["hyperparameters"], Path(trial["dir"])
    correct, losses = np.zeros(len(y), dtype=bool), np.zeros(len(y))
    for k, held in enumerate(folds):
        path = trial_dir / f"rescore_fold{k}.json"
        key = {"hyperparameters": values, "fold": k, "folds": len(folds), "seed": options.seed,
               "samples": len(y), "epochs": options.epochs, "schedule": recipe_for(options.model)["lr_schedule"]}
        cached = _cached_fold(path, key, len(held))
        if cached is None:
            rows = np.sort(np.concatenate([f for j, f in enumerate(folds) if j != k]))
            model = _fit_candidate(values, options, data, x[rows], y[rows], options.epochs)
            artifact = trial_dir / f"rescore_fold{k}.tflite"
            write_bytes(artifact, to_tflite(model, values["quantization"], calibration=x[rows][:300]))
            probabilities = load(artifact).predict(x[held])
            remove_file(artifact)
            cached = {"correct": (probabilities.argmax(-1) == y[held]).astype(int).tolist(),
                      "log_loss": _log_losses(probabilities, y[held]).tolist()}
            write_json(path, {**key, **cached})
        correct[held] = np.asarray(cached["correct"], dtype=bool)
        losses[held] = cached["log_loss"]
    return {"correct": correct, "log_loss": float(losses.mean())}


def _log_losses(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each sample's log loss: −log of the probability given to its true class."""
    return -np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0))


def _cached_fold(path: Path, key: dict, size: int) -> dict | None:
    try:
        recorded = read_json(path) if path.is_file() and not path.is_symlink() else None
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or any(recorded.get(k) != v for k, v in key.items()):
        return None
    correct, losses = recorded.get("correct"), recorded.get("log_loss")
    if not (isinstance(correct, list) and isinstance(losses, list) and len(correct) == len(losses) == size):
        return None
    if not all(c in (0, 1) and not isinstance(c, bool) for c in correct) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v < 1e3 for v in losses):
        return None
    return {"correct": correct, "log_loss": [float(v) for v in losses]}


def _int8_test_comparison(artifacts: list[Path], data) -> dict:
    """The baseline's and the winner's shipped artifacts on the test split, side by side: each
    accuracy with its interval and the winner's difference, paired (same images)."""
    from edge_runtime import load
    from pipeline.stats import paired_drop, wilson

    x_test, y_test = data.split("test")
    correct = [load(a).predict(x_test).argmax(-1) == y_test for a in artifacts]
    accuracy = [{"accuracy": float(c.mean()), "ci95": list(wilson(int(c.sum()), len(c)))} for c in correct]
    paired = paired_drop(correct[0], correct[1])  # baseline − winner
    return {"samples": int(len(y_test)), "baseline": accuracy[0], "best": accuracy[1],
            "difference": -paired["drop"], "difference_ci95": [-paired["ci95"][1], -paired["ci95"][0]],
            "method": paired["method"]}


def _baseline(options: SearchOptions, out: Path) -> dict:
    """The zoo model as it comes (its own recipe), trained and quantized here."""
    from pipeline.quantize import QuantizeOptions, quantize
    from pipeline.train import TrainConfig, train

    run_dir = out / "baseline"
    artifact = run_dir / "model_int8.tflite"
    test_accuracy = _recorded_accuracy(run_dir) if artifact.is_file() else None
    if test_accuracy is None:  # not trained yet, or its record is damaged: train it (again)
        result = train(TrainConfig(model=options.model, dataset=options.dataset, seed=options.seed),
                       out=run_dir, runs_root=out, verbose=0)
        quantize(run_dir, QuantizeOptions(modes=["int8"], recover=False))
        test_accuracy = result.metrics["test_accuracy"]
    return {"run_dir": str(run_dir), "test_accuracy": test_accuracy, "size_kb": artifact.stat().st_size / 1024}


def _recorded_accuracy(run_dir: Path) -> float | None:
    try:
        value = read_json(run_dir / "train.json").get("test_accuracy")
    except (OSError, ValueError, AttributeError):
        return None
    valid = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0
    return float(value) if valid else None


def _trial_rows(trials: list[dict], best: str | None) -> list[dict]:
    """Finished trials as report rows, each marked on or off the front (validation accuracy,
    p50, size)."""
    from pipeline.report import pareto

    rows = [{"variant": f"trial {t['trial']}", "trial": t["trial"], "artifact": "model_int8", "metric": "accuracy",
             "value": t["metrics"]["val_accuracy"], "score": t["metrics"]["val_accuracy"],
             "p50_ms": t["metrics"].get("p50_ms_pooled", t["metrics"]["p50_ms"]), "size_kb": t["metrics"]["size_kb"],
             "recommended": t["trial"] == best}
            for t in trials if t["status"] == "COMPLETED"]
    pareto(rows)
    return rows


def _report(summary: dict, out: Path) -> None:
    """search_report.md and the accuracy-vs-latency scatter of every trial with its front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.report import _png, accuracy_latency_figure

    best = summary.get("best")
    rows = _trial_rows(summary["trials"], best["trial"] if best else None)
    figure = accuracy_latency_figure(plt, rows) if rows else None
    if figure is not None:
        axis = figure.axes[0]
        axis.set_ylabel("validation accuracy (%)")
        budget = summary["options"].get("max_latency_ms")
        if budget:
            axis.axvline(budget, color="tab:red", linestyle="--", linewidth=1, label=f"latency budget {budget:g} ms")
            axis.legend(loc="lower right", fontsize=8)
        write_bytes(out / "search_accuracy_latency.png", _png(figure))
    plt.close("all")
    lines = ["# Search report", "", "| Trial | Status | Hyperparameters | Val. accuracy | p50 ms | "
             "Architecture p50 ms (timings) | Size KiB | Fits |", "|---|---|---|---|---|---|---|---|"]
    pools = summary.get("pooled_timings", {})
    for t in summary["trials"]:
        m = t["metrics"]
        pool = pools.get(architecture(summary["options"]["model"], t["hyperparameters"])) if m else None
        pooled = f"{pool['p50_ms']:.4f} ({pool['timings']})" if pool else "–"
        lines.append(f"| {t['trial']} | {t['status']} | {json.dumps(t['hyperparameters'])} | "
                     + (f"{m['val_accuracy']:.2%} | {m['p50_ms']:.4f} | {pooled} | {m['size_kb']:.1f} | "
                        f"{'yes' if m.get('feasible') else 'no'} |" if m else "– | – | – | – | – |"))
    baseline, timing, screened = summary["baseline"], summary["timing"], summary["screened"]
    lines += ["", "Fits: decided on the architecture's p50, the median of every timing of it (its untrained "
                  "twin's and each trial's that has it): one architecture timed near a budget lands on either "
                  "side of it from one process to the next."]
    lines += ["", f"Front (validation accuracy, p50, size: no other trial is better in one without being "
                  f"worse in another): trials {', '.join(summary['front']) or 'none'}."]
    if screened["architectures"]:
        lines += ["", f"Screened: {screened['architectures']} architectures measured untrained before any "
                      f"training; " + (f"{screened['over_budget']} of them were more than {screened['tolerance']:.0%} "
                                       f"over a budget and never trained." if screened["over_budget"] else
                                       f"all were within {screened['tolerance']:.0%} of the budgets.")]
    lines += ["", f"Latency: p50 at batch 1 on one thread, {timing['location']}"
              + (f" ({timing['cpu_model']})" if timing.get("cpu_model") else "") + "; the baseline and the best "
              f"timed alternately, median of {len(baseline['p50_ms_rounds'])}.", "",
              f"Baseline ({summary['options']['model']} as it comes): test accuracy "
              f"{baseline['test_accuracy']:.2%}, int8 p50 {baseline['p50_ms']:.4f} ms."]
    if best:
        lines.append(f"Best (trial {best['trial']}, run `{best['run_dir']}`): test accuracy "
                     f"{best['test_accuracy']:.2%}, int8 p50 {best['p50_ms']:.4f} ms "
                     f"(×{summary['comparison']['p50_ratio']:.2f} the baseline's).")
        lines.append(f"Chosen: {choice_text(summary)}.")
        test = summary["comparison"]["int8_test"]
        lines.append(f"Int8 artifacts on {test['samples']} test samples: baseline {_percent(test['baseline'])}, "
                     f"best {_percent(test['best'])}; difference {100 * test['difference']:+.2f} points "
                     f"[{100 * test['difference_ci95'][0]:+.2f}, {100 * test['difference_ci95'][1]:+.2f}] "
                     f"(paired).")
    else:
        lines.append("No trial fits the budgets.")
    lines += ["", "![accuracy vs latency](search_accuracy_latency.png)", ""]
    write_text(out / "search_report.md", "\n".join(lines))


def _percent(figure: dict) -> str:
    low, high = figure["ci95"]
    return f"{figure['accuracy']:.2%} [{low:.2%}, {high:.2%}]"
