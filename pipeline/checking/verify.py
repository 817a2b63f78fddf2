"""``pipeline verify``: accuracy parity of every artifact against its Keras source, on the
test split, through the same runtime the device uses; gates that fail the command."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.artifact import read_sidecar
from pipeline.checking.gates import apply_gates, classifier_intervals, inconclusive_gates, sqnr_db, task_metric
from pipeline.checking.runtime_checks import (
    cross_runtime,
    gpu_delegate,
    kernel_agreement,
    kernel_floor,
    micro_check,
    ort_parity,
    runs_on_micro,
    sidecar_problem,
    signature_parity,
)
from pipeline.config.gates import VerifyOptions
from pipeline.core import rundir
from pipeline.core.errors import ParityError, UsageError
from pipeline.core.fsutil import write_json
from pipeline.core.tasks import compare, evaluate, metric_name, roc_points
from pipeline.data.context import RunContext
from pipeline.formats.kinds import GPU_DELEGATE_MODES, MODEL, PRUNED_MODEL, mode_spec


def verify(run: str | Path | None, options: VerifyOptions) -> dict:
    options.validate()
    gates = options.resolved_gates()
    with RunContext.locked(run) as context:
        if context.task != "classifier":
            gates = options.resolved_gates(context.task)
        report = _verify_locked(context, options, gates)
        path = write_json(context.run_dir / "verify.json", report)
        rundir.update_manifest(context.run_dir, "verify", artifacts=[path])
    if not report["passed"]:
        failures = [f"{a['artifact']} ({', '.join(_failed(g, r) for g, r in a['gates'].items() if not r['passed'])})"
                    for a in report["artifacts"] if not a["passed"]]
        raise ParityError(f"{len(failures)} artifact(s) failed verification: {'; '.join(failures)}"
                          f" — see {path}")
    if options.strict and report["inconclusive"]:
        raise ParityError(f"--strict: {len(report['inconclusive'])} gate(s) inconclusive on "
                          f"{report['test_samples']} test samples: {'; '.join(report['inconclusive'])}")
    return report


def _verify_locked(context: RunContext, options: VerifyOptions, gates) -> dict:
    from pipeline.core.backend import import_keras

    import_keras()
    from pipeline.formats.sidecar import check_fresh

    paths = _artifact_paths(context, options.artifacts)
    if not paths:
        raise UsageError(f"{context.run_dir} has no artifacts to verify: run `pipeline quantize` "
                         f"or `pipeline convert` first")
    check_fresh(context.run_dir, paths)
    x_test, y_test = context.dataset.split("test")
    groups = context.dataset.groups_test
    references: dict[str, np.ndarray] = {}
    outputs: dict[str, np.ndarray] = {}
    rows = []
    raw_test = context.dataset.x_test
    for path in paths:
        found = read_sidecar(path)
        sidecar = found or {"mode": _infer_mode(path)}
        source = sidecar.get("source_model", {}).get("path", MODEL)
        if source not in references:
            references[source] = _keras_predict(context, source, x_test)
        # As the device sees it: raw test samples through the sidecar's own preprocessing.
        outputs[path.name], inference = _artifact_predict(path, raw_test, found, context.preprocessing, context.seed)
        rows.append(_verify_artifact(context, path, found, sidecar, source, references[source],
                                     outputs[path.name], gates, options, (x_test, y_test, groups)))
        rows[-1]["inference"] = inference
    for row, path in zip(rows, paths):
        if path.suffix == ".ort":  # the same graph as its .onnx: ONNX Runtime must agree with itself
            ort_parity(row, path, outputs, lambda twin: _artifact_predict(
                twin, raw_test, read_sidecar(twin), context.preprocessing, context.seed)[0], context.task)
    for row, path in zip(rows, paths):  # explain what quantization cost, not a memory budget
        lost = any(not row["gates"][m]["passed"] for m in gates["quantized"] if m in row["gates"])
        if row["gate_kind"] == "quantized" and path.suffix != ".ort" and (options.explain or lost):
            row["explain"] = _explain(context, path, x_test, options.explain_top)
    report = {
        "passed": all(r["passed"] for r in rows),
        "task": context.task,
        "metric": metric_name(context.task, y_test),
        "test_samples": int(len(y_test)),
        "keras": _keras_metrics(context, references, x_test, y_test, groups),
        "gates": {kind: {m: {"op": op, "threshold": t} for m, (op, t) in rules.items()}
                  for kind, rules in gates.items()},
        "artifacts": rows,
        "cross_runtime": cross_runtime(outputs),
    }
    report["inconclusive"] = inconclusive_gates(report)
    return report


def _verify_artifact(context: RunContext, path: Path, found: dict | None, sidecar: dict, source: str,
                     reference, output, gates, options: VerifyOptions, test) -> dict:
    """One artifact's row: its metrics against Keras, its gates, and TFLite Micro's view."""
    x_test, y_test, groups = test
    if context.task == "classifier":
        row = _compare(path, sidecar, reference, output, x_test, y_test, context.task)
    else:
        row = _compare_task(context, path, sidecar, source, reference, output, test)
    row["source_model"] = source
    rules = gates[row["gate_kind"]]
    if row["gate_kind"] == "qat":  # judged against the fake-quant model it was converted from
        row.update(_fake_quant_parity(context, found, source, output, x_test))
        if context.task == "classifier" and path.suffix == ".tflite":
            row["kernel_agreement"] = kernel_agreement(path, x_test, output, context.seed)
            rules = kernel_floor(rules, row["kernel_agreement"])
    row["gates"] = apply_gates(row, rules)
    if rules is not gates[row["gate_kind"]]:
        row["gates"]["fake_quant_agreement"]["configured_threshold"] = gates["qat"]["fake_quant_agreement"][1]
    problem = sidecar_problem(found, context.preprocessing,
                              in_run=path.resolve().parent == context.run_dir.resolve())
    row["gates"]["sidecar"] = {"op": "==", "threshold": "training preprocessing",
                               "value": problem or "matches", "passed": problem is None}
    if path.suffix == ".tflite":
        row["signature"] = signature_parity(path, x_test)
        if row["signature"]["key"]:  # a model from elsewhere may have none: recorded, not failed
            row["gates"]["signature"] = {"op": "==", "threshold": "plain invoke's outputs",
                                         "value": row["signature"].get("problem") or "equal",
                                         "passed": "problem" not in row["signature"]}
        if sidecar.get("mode") in GPU_DELEGATE_MODES:
            row["gpu_delegate"] = gpu_delegate(path)
    if runs_on_micro(path, sidecar["mode"]):
        row.update(micro_check(path, x_test, y_test, output, context.task, gates["micro"], options, context.seed,
                               row.get("threshold")))
        row["gates"].update(row.pop("micro_gates"))
    for gate in row["gates"].values():  # exact checks (sidecar, budgets): the verdict is the result
        gate.setdefault("verdict", "pass" if gate["passed"] else "fail")
    row["passed"] = all(g["passed"] for g in row["gates"].values())
    return row


def _keras_metrics(context: RunContext, references: dict, x_test, y_test, groups) -> dict:
    """Each Keras source's test metric: a classifier's accuracy (a number, as before); another
    task's metric with its interval (an autoencoder's AUC also with its ROC curve)."""
    if context.task == "classifier":
        return {source: task_metric(ref, y_test, x_test, context.task) for source, ref in references.items()}
    found = {}
    for source, reference in references.items():
        found[source] = evaluate(context.task, reference, x_test, y_test, groups)
        if found[source]["metric"] == "auc":
            found[source]["roc"] = roc_points(reference, x_test, y_test, groups)
    return found


def _compare_task(context: RunContext, path: Path, sidecar: dict, source: str, reference, output, test) -> dict:
    """An autoencoder's or a regression's artifact against its Keras source: the task's metric
    with intervals, its drop with a paired interval, output error; an autoencoder's decisions at
    the threshold its sidecar carries (or the one its source model gives, for a foreign file)."""
    x_test, y_test, groups = test
    mode = sidecar["mode"]
    thresholds = None
    if context.task == "reconstruction":
        keras = context.task_output(context.run_dir / source)["anomaly"]["threshold"]
        anomaly = sidecar.get("anomaly") if isinstance(sidecar.get("anomaly"), dict) else None
        value = (anomaly or {}).get("threshold")
        thresholds = (keras, float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else keras)
    compared = compare(context.task, reference, output, x_test, y_test, groups, thresholds)
    error = np.abs(output.astype(np.float64) - reference)
    if compared["metric"] == "auc":
        compared["roc"] = roc_points(output, x_test, y_test, groups)
    return {
        "artifact": path.name, "format": path.suffix.lstrip("."), "mode": mode,
        "gate_kind": mode_spec(mode).gate_kind if mode_spec(mode) else "quantized",
        **compared, "top1_agreement": None,
        "max_abs_error": float(error.max()), "mean_abs_error": float(error.mean()),
        "sqnr_db": sqnr_db(reference, output), "size_bytes": path.stat().st_size,
    }


def _fake_quant_parity(context: RunContext, sidecar: dict | None, source: str, output, x_test) -> dict:
    """A QAT artifact against the fake-quant Keras model it was converted from (named, with its
    sha256, in the sidecar): top-1 agreement with its interval, and the largest output
    difference in the artifact's output steps (LSBs). Which reference each gate used is recorded.
    A missing or changed fake-quant model fails the gate (agreement 0) with the reason."""
    from pipeline.core.fsutil import sha256_file
    from pipeline.core.stats import wilson

    record = ((sidecar or {}).get("options") or {}).get("qat")
    name = record.get("fake_quant_model") if isinstance(record, dict) else None
    path = context.run_dir / name if isinstance(name, str) and Path(name).name == name else None
    found = {"references": {"metric_drop": source, "fake_quant_agreement": name}, "fake_quant": {"model": name}}
    problem = ("the sidecar names no fake-quant model" if path is None
               else f"{name} is missing" if not path.is_file()
               else f"{name} changed since the artifact was converted from it"
               if sha256_file(path) != record.get("fake_quant_sha256") else None)
    if problem:
        found["fake_quant"]["problem"] = problem
        return {**found, "fake_quant_agreement": 0.0}
    import pipeline.core.fake_quant  # noqa: F401  (registers the fake-quant layers it is made of)
    from pipeline.core.modelio import load_model

    reference = load_model(path, unsafe=False).predict(x_test, batch_size=256, verbose=0)
    step = _output_step(sidecar, reference)
    found["fake_quant"]["max_error_lsb"] = float(np.max(np.abs(output.astype(np.float64) - reference)) / step)
    found["fake_quant"]["output_step"] = step
    if context.task != "classifier":
        return {**found, "fake_quant_agreement": None}
    agreeing = int(np.sum(output.argmax(-1) == reference.argmax(-1)))
    return {**found, "fake_quant_agreement": agreeing / len(reference),
            "fake_quant_agreement_ci95": list(wilson(agreeing, len(reference)))}


def _output_step(sidecar: dict | None, reference) -> float:
    """One step of the artifact's output: its integer output scale, else 1/255 of the range."""
    outputs = (sidecar or {}).get("outputs")
    first = outputs[0] if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict) else {}
    scale = first.get("scale")
    if isinstance(scale, (int, float)) and not isinstance(scale, bool) and 0 < scale < float("inf"):
        return float(scale)
    spread = float(np.max(reference) - np.min(reference))
    return spread / 255.0 if spread > 0 else 1.0


def _failed(name: str, gate: dict) -> str:
    """A failed gate for the error line; a budget names the measured value and the limit."""
    if name in ("ram_kb", "flash_kb"):
        what = "tensor arena" if name == "ram_kb" else "flash (model bytes)"
        return (f"{what} {gate['value']:,.1f} KiB ({gate['bytes']:,} bytes) is over the "
                f"{gate['threshold']:g} KiB budget")
    return name


def _artifact_paths(context: RunContext, names: list[str] | None) -> list[Path]:
    from pipeline.formats.kinds import run_artifacts

    if not names:
        return run_artifacts(context.run_dir)
    paths = []
    for name in names:
        path = Path(name) if Path(name).exists() else context.run_dir / name
        if not path.exists():
            raise UsageError(f"artifact {name} not found in {context.run_dir}")
        paths.append(path)
    return paths


def _keras_predict(context: RunContext, source: str, x_test: np.ndarray) -> np.ndarray:
    model = context.load_model(pruned=source == PRUNED_MODEL)
    return model.predict(x_test, batch_size=256, verbose=0)


# Test samples per invoke where the artifact takes a batch (use_batch), and how many of them
# (seeded) are also run one at a time, as the device runs them: batched outputs stand only
# where they are identical to those.
VERIFY_BATCH = 64
BATCH_PROBE = 256


def _artifact_predict(path: Path, raw_test: np.ndarray, sidecar: dict | None,
                      preprocessing: dict, seed: int = 0) -> tuple[np.ndarray, dict]:
    """The artifact's outputs on the test split, as the device computes them (raw samples
    through the sidecar's own preprocessing), and how they were computed: batched where the
    graph allows it and a seeded probe of single-sample invokes gives exactly the same
    outputs, one sample at a time otherwise."""
    from edge_runtime import load
    from edge_runtime.preprocessing import apply_preprocessing

    runner = load(path)
    if sidecar is None:  # a foreign artifact: the run's preprocessing is all there is
        feed, raw = apply_preprocessing(raw_test, preprocessing), False
    else:
        feed, raw = raw_test, True
    batch = runner.use_batch(VERIFY_BATCH) if len(feed) > 1 else 1
    outputs = runner.predict(feed, raw=raw)
    record: dict[str, Any] = {"batch": batch}
    if batch == 1:
        record["one_at_a_time"] = "the graph takes one sample per invoke (a fixed batch, or state kept)"
    else:
        probe = np.sort(np.random.default_rng(seed).choice(len(feed), min(BATCH_PROBE, len(feed)), replace=False))
        runner.use_batch(1)
        single = runner.predict(feed[probe], raw=raw)
        difference = float(np.max(np.abs(single.astype(np.float64) - outputs[probe])))
        record.update(probe_samples=int(len(probe)), probe_max_abs_difference=difference)
        if difference != 0.0:  # not what the device computes: every sample on its own instead
            outputs, record["batch"] = runner.predict(feed, raw=raw), 1
            record["fallback"] = f"batch {batch} differs from one sample at a time by up to {difference:.3g}"
    return outputs, record


def _infer_mode(path: Path) -> str:
    """The mode of a foreign artifact (no sidecar), from its input tensor's type."""
    from edge_runtime import load

    dtype = load(path).input.dtype
    return {"int8": "int8", "uint8": "int8", "int16": "int16x8"}.get(dtype, "float32")


def _compare(path: Path, sidecar: dict, reference, output, x_test, y_test, task: str) -> dict[str, Any]:
    mode = sidecar["mode"]
    keras_metric = task_metric(reference, y_test, x_test, task)
    metric_value = task_metric(output, y_test, x_test, task)
    intervals: dict[str, Any] = {}
    if task == "classifier":
        metric_drop = keras_metric - metric_value
        agreement = float(np.mean(output.argmax(-1) == reference.argmax(-1)))
        per_class = {str(c): float(np.mean(output.argmax(-1)[y_test == c] == c))
                     for c in np.unique(y_test)}
        intervals = classifier_intervals(reference, output, y_test)
    else:  # reconstruction error: a rise is the loss
        metric_drop, agreement, per_class = metric_value - keras_metric, None, {}
    error = np.abs(output.astype(np.float64) - reference)
    return {
        "artifact": path.name, "format": path.suffix.lstrip("."), "mode": mode,
        "gate_kind": mode_spec(mode).gate_kind if mode_spec(mode) else "quantized",
        "metric": "accuracy" if task == "classifier" else "reconstruction_mse",
        "metric_value": metric_value, "keras_metric_value": keras_metric,
        "metric_drop": float(metric_drop), "top1_agreement": agreement,
        "max_abs_error": float(error.max()), "mean_abs_error": float(error.mean()),
        "sqnr_db": sqnr_db(reference, output), "size_bytes": path.stat().st_size,
        "per_class_accuracy": per_class, **intervals,
    }


# --explain runs the quantization debugger on this many test samples, drawn with the run's
# seed (its per-layer errors are averages over samples: a few dozen settle their ranking).
EXPLAIN_SAMPLES = 64


def _explain(context: RunContext, path: Path, x_test: np.ndarray, top: int) -> dict:
    from pipeline.checking.explain import explain_onnx, explain_tflite

    picked = context.dataset.sample_indices("test", EXPLAIN_SAMPLES, context.seed)
    subset = x_test[picked]
    result = (explain_tflite if path.suffix == ".tflite" else explain_onnx)(context, path, subset, top)
    result["test_samples"] = {"drawn": int(len(picked)), "of": int(len(x_test)), "seed": context.seed}
    return result
