"""``pipeline verify``: accuracy parity of every artifact against its Keras source, on the
test split, through the same runtime the device uses; gates that fail the command."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.artifact import read_sidecar
from pipeline import rundir
from pipeline.context import RunContext
from pipeline.errors import ParityError, UsageError
from pipeline.formats import MODEL, PRUNED_MODEL, QUANT_MODES, artifact_file
from pipeline.fsutil import write_json
from pipeline.gpu_delegate import FLOAT_MODES as GPU_MODES

# Default gates per artifact kind: (metric, comparison, threshold).
DEFAULT_GATES: dict[str, dict[str, tuple[str, float]]] = {
    "float32": {"max_abs_error": ("<=", 1e-4), "top1_agreement": (">=", 1.0)},
    "float16": {"max_abs_error": ("<=", 1e-2)},
    "quantized": {"metric_drop": ("<=", 0.01), "top1_agreement": (">=", 0.98)},
    # TFLite Micro against LiteRT's reference kernels, for int8 and int16x8 TFLite artifacts.
    "micro": {"top1_agreement": (">=", 0.99)},
}


@dataclass
class VerifyOptions:
    artifacts: list[str] | None = None            # names in the run, or paths
    gates: dict[str, dict[str, float]] = field(default_factory=dict)  # kind -> metric -> threshold
    explain: bool = False
    explain_top: int = 3
    strict: bool = False  # an inconclusive gate (interval straddling its threshold) fails too
    # Microcontroller budgets: the measured TFLM tensor arena and the model's flash bytes.
    max_ram_kb: float | None = None
    max_flash_kb: float | None = None

    def validate(self) -> None:
        from pipeline.limits import check

        check("max_ram_kb", self.max_ram_kb, label="--ram-kb")
        check("max_flash_kb", self.max_flash_kb, label="--flash-kb")
        self.resolved_gates()

    def resolved_gates(self) -> dict[str, dict[str, tuple[str, float]]]:
        gates = {kind: dict(rules) for kind, rules in DEFAULT_GATES.items()}
        for kind, overrides in self.gates.items():
            if kind not in gates:
                from pipeline.errors import unknown_name

                raise unknown_name("gate kind", kind, gates)
            for metric, threshold in overrides.items():
                known = {"max_abs_error": "<=", "mean_abs_error": "<=", "metric_drop": "<=",
                         "top1_agreement": ">=", "sqnr_db": ">="}
                if metric not in known:
                    from pipeline.errors import unknown_name

                    raise unknown_name("gate metric", metric, known)
                gates[kind][metric] = (known[metric], float(threshold))
        return gates


def parse_gate(text: str) -> tuple[str, str, float]:
    """``quantized.metric_drop=0.02`` → ("quantized", "metric_drop", 0.02)."""
    key, _, value = text.partition("=")
    kind, _, metric = key.partition(".")
    try:
        return kind.strip(), metric.strip(), float(value)
    except ValueError:
        raise UsageError(f"--gate takes KIND.METRIC=NUMBER (e.g. quantized.metric_drop=0.02), "
                         f"got '{text}'") from None


def verify(run: str | Path | None, options: VerifyOptions) -> dict:
    options.validate()
    gates = options.resolved_gates()
    with RunContext.locked(run) as context:
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
    from pipeline.backend import import_keras

    import_keras()
    from pipeline.artifacts import check_fresh

    paths = _artifact_paths(context, options.artifacts)
    if not paths:
        raise UsageError(f"{context.run_dir} has no artifacts to verify: run `pipeline quantize` "
                         f"or `pipeline convert` first")
    check_fresh(context.run_dir, paths)
    x_test, y_test = context.dataset.split("test")
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
        outputs[path.name] = _artifact_predict(path, raw_test, found, context.preprocessing)
        rows.append(_verify_artifact(context, path, found, sidecar, source, references[source],
                                     outputs[path.name], gates, options, (x_test, y_test)))
    for row, path in zip(rows, paths):
        if path.suffix == ".ort":  # the same graph as its .onnx: ONNX Runtime must agree with itself
            _ort_parity(row, path, outputs, raw_test, context)
    for row, path in zip(rows, paths):  # explain what quantization cost, not a memory budget
        lost = any(not row["gates"][m]["passed"] for m in gates["quantized"] if m in row["gates"])
        if row["gate_kind"] == "quantized" and path.suffix != ".ort" and (options.explain or lost):
            row["explain"] = _explain(context, path, x_test, options.explain_top)
    keras_metrics = {source: _task_metric(ref, y_test, x_test, context.task)
                     for source, ref in references.items()}
    report = {
        "passed": all(r["passed"] for r in rows),
        "task": context.task,
        "metric": "accuracy" if context.task == "classifier" else "reconstruction_mse",
        "test_samples": int(len(y_test)),
        "keras": keras_metrics,
        "gates": {kind: {m: {"op": op, "threshold": t} for m, (op, t) in rules.items()}
                  for kind, rules in gates.items()},
        "artifacts": rows,
        "cross_runtime": _cross_runtime(outputs),
    }
    report["inconclusive"] = inconclusive_gates(report)
    return report


def _verify_artifact(context: RunContext, path: Path, found: dict | None, sidecar: dict, source: str,
                     reference, output, gates, options: VerifyOptions, test) -> dict:
    """One artifact's row: its metrics against Keras, its gates, and TFLite Micro's view."""
    x_test, y_test = test
    row = _compare(path, sidecar, reference, output, x_test, y_test, context.task)
    row["source_model"] = source
    row["gates"] = _apply_gates(row, gates[row["gate_kind"]])
    problem = sidecar_problem(found, context.preprocessing,
                              in_run=path.resolve().parent == context.run_dir.resolve())
    row["gates"]["sidecar"] = {"op": "==", "threshold": "training preprocessing",
                               "value": problem or "matches", "passed": problem is None}
    if path.suffix == ".tflite":
        row["signature"] = _signature_parity(path, x_test)
        if row["signature"]["key"]:  # a model from elsewhere may have none: recorded, not failed
            row["gates"]["signature"] = {"op": "==", "threshold": "plain invoke's outputs",
                                         "value": row["signature"].get("problem") or "equal",
                                         "passed": "problem" not in row["signature"]}
        if sidecar.get("mode") in GPU_MODES:
            row["gpu_delegate"] = _gpu(path)
    if _runs_on_micro(path, sidecar["mode"]):
        row.update(_micro(path, x_test, y_test, output, context.task, gates["micro"], options, context.seed))
        row["gates"].update(row.pop("micro_gates"))
    for gate in row["gates"].values():  # exact checks (sidecar, budgets): the verdict is the result
        gate.setdefault("verdict", "pass" if gate["passed"] else "fail")
    row["passed"] = all(g["passed"] for g in row["gates"].values())
    return row


# Samples run through LiteRT's own SignatureRunner and compared with the plain invoke.
SIGNATURE_SAMPLES = 16


def _signature_parity(path: Path, x_test: np.ndarray) -> dict:
    """The artifact's ``serving_default`` signature, and whether LiteRT's SignatureRunner gives
    exactly the plain invoke's outputs on the first ``SIGNATURE_SAMPLES`` test samples."""
    from edge_runtime.runner import load, quantize, signature_outputs

    runner = load(path, sidecar=False)
    if not runner.signature:
        return {"key": None}
    feed = quantize(x_test[:SIGNATURE_SAMPLES], runner.input)
    plain = np.concatenate([runner.invoke_quantized(sample[None]).copy() for sample in feed])
    through = signature_outputs(path, feed)[runner.signature["outputs"][0]]
    record = {"key": runner.signature["key"], "inputs": runner.signature["inputs"],
              "outputs": runner.signature["outputs"], "samples": int(len(feed)),
              "max_abs_difference": float(np.max(np.abs(plain.astype(np.float64) - through.astype(np.float64))))}
    if record["max_abs_difference"] != 0.0:
        record["problem"] = f"signature runner differs from the plain invoke by {record['max_abs_difference']:.3g}"
    return record


# An .ort file is its .onnx graph optimized and saved by ONNX Runtime: outputs may differ by
# float rounding of fused kernels at most.
ORT_TOLERANCE = 1e-6
ORT_INT_AGREEMENT = 0.99  # an integer .ort against its .onnx, top-1 (as TFLite Micro against LiteRT)


def _ort_parity(row: dict, path: Path, outputs: dict, raw_test, context: RunContext) -> None:
    """Gate ``onnx_parity``: the ``.ort``'s outputs against its ``.onnx`` twin's (the one its
    sidecar names, in the same directory) on every test sample."""
    twin_name = ((read_sidecar(path) or {}).get("options") or {}).get("onnx")
    twin = path.with_name(twin_name) if isinstance(twin_name, str) and "/" not in twin_name else None
    if twin is None or not twin.is_file():
        difference, value = None, "no .onnx twin to compare with"
    else:
        if twin.name not in outputs:
            outputs[twin.name] = _artifact_predict(twin, raw_test, read_sidecar(twin), context.preprocessing)
        difference = float(np.max(np.abs(outputs[path.name].astype(np.float64) - outputs[twin.name])))
        value = difference
    passed = difference is not None and difference <= ORT_TOLERANCE
    row["onnx_twin"] = twin.name if twin is not None else None
    gate = {"op": "<=", "threshold": ORT_TOLERANCE, "value": value, "passed": passed}
    if difference is not None and row.get("mode") not in ("float32", "float16") and context.task == "classifier":
        # An integer .ort is saved with ONNX Runtime's arm kernels chosen (u8s8): on an x86
        # without VNNI they saturate where the .onnx's own x86 choice does not (measured on an
        # AVX2 EPYC: outputs up to 0.33 apart). Its gate is top-1 agreement with the .onnx.
        agreement = float(np.mean(outputs[path.name].argmax(-1) == outputs[twin.name].argmax(-1)))
        gate = {"op": ">=", "threshold": ORT_INT_AGREEMENT, "value": agreement, "max_abs_difference": difference,
                "passed": agreement >= ORT_INT_AGREEMENT}
    gate["verdict"] = "pass" if gate["passed"] else "fail"
    row["gates"]["onnx_parity"] = gate
    row["passed"] = all(g["passed"] for g in row["gates"].values())


def _gpu(path: Path) -> dict:
    from pipeline.gpu_delegate import gpu_compatibility

    try:
        return gpu_compatibility(path)
    except (ValueError, RuntimeError) as exc:  # an analyzer without a verdict: say so, do not fail
        return {"error": str(exc)[:200]}


def _failed(name: str, gate: dict) -> str:
    """A failed gate for the error line; a budget names the measured value and the limit."""
    if name in ("ram_kb", "flash_kb"):
        what = "tensor arena" if name == "ram_kb" else "flash (model bytes)"
        return (f"{what} {gate['value']:,.1f} KiB ({gate['bytes']:,} bytes) is over the "
                f"{gate['threshold']:g} KiB budget")
    return name


def _runs_on_micro(path: Path, mode: str) -> bool:
    from pipeline.micro import MICRO_MODES

    return path.suffix == ".tflite" and mode in MICRO_MODES


# TFLite Micro runs its reference kernels one sample at a time (a ResNet-8 on CIFAR-10: tens
# of ms each): on a larger test split it checks this many samples, drawn with the run's seed,
# and its agreement carries the subset's Wilson interval.
MICRO_SAMPLES = 1000


def _micro(path: Path, x_test, y_test, verified, task: str, rules, options: VerifyOptions,
           seed: int = 0) -> dict:
    """TFLM parity and memory of one integer TFLite artifact, with its gates: agreement with
    LiteRT, and the RAM/flash budgets when given. A model TFLM cannot run fails only when a
    budget says a microcontroller is the target."""
    from pipeline.micro import MicroError, micro_parity, unavailable

    budgets = {"ram_kb": options.max_ram_kb, "flash_kb": options.max_flash_kb}
    targeted = any(v is not None for v in budgets.values())
    reason = unavailable()
    if reason:
        if targeted:
            raise UsageError(f"--ram-kb/--flash-kb need TFLite Micro to measure: {reason}")
        return {"micro": {"skipped": reason}, "micro_gates": {}}
    picked = (np.sort(np.random.default_rng(seed).choice(len(x_test), MICRO_SAMPLES, replace=False))
              if len(x_test) > MICRO_SAMPLES else np.arange(len(x_test)))
    try:
        micro = micro_parity(path, x_test[picked], None if y_test is None else y_test[picked],
                             verified[picked], task)
    except MicroError as exc:
        gate = {"op": "runs", "threshold": "on TFLM", "value": str(exc), "passed": not targeted}
        return {"micro": {"error": str(exc)}, "micro_gates": {"tflm": gate}}
    if micro.get("top1_agreement") is not None and micro.get("samples"):
        from pipeline.stats import wilson

        micro["top1_agreement_ci95"] = list(wilson(round(micro["top1_agreement"] * micro["samples"]), micro["samples"]))
    micro["test_samples"] = {"checked": int(len(picked)), "of": int(len(x_test)),
                             "seed": seed if len(picked) < len(x_test) else None}
    gates = {f"tflm_{metric}": result for metric, result in _apply_gates(micro, rules).items()}
    measured = {"ram_kb": micro["arena_bytes"], "flash_kb": micro["flash_bytes"]}
    for name, budget in budgets.items():
        if budget is not None:
            value = measured[name] / 1024
            gates[name] = {"op": "<=", "threshold": budget, "value": value, "bytes": measured[name],
                           "passed": bool(value <= budget)}
    return {"micro": micro, "micro_gates": gates}


def _artifact_paths(context: RunContext, names: list[str] | None) -> list[Path]:
    from pipeline.bench import run_artifacts

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


def _artifact_predict(path: Path, raw_test: np.ndarray, sidecar: dict | None,
                      preprocessing: dict) -> np.ndarray:
    from edge_runtime import load
    from edge_runtime.preprocessing import apply_preprocessing

    runner = load(path)
    if sidecar is None:  # a foreign artifact: the run's preprocessing is all there is
        return runner.predict(apply_preprocessing(raw_test, preprocessing))
    return runner.predict(raw_test, raw=True)


# The fields of a preprocessing spec that change what the model is fed.
_PREPROCESSING_FIELDS = ("raw_dtype", "scale", "mean", "std", "input_shape", "layout")


def sidecar_problem(sidecar: dict | None, preprocessing: dict, *, in_run: bool) -> str | None:
    """Why a device reading this sidecar would feed the model differently from training."""
    if sidecar is None:
        return "missing: a device cannot preprocess raw input without it" if in_run else None
    spec = sidecar.get("preprocessing")
    if not isinstance(spec, dict):
        return "has no preprocessing spec"
    for name in _PREPROCESSING_FIELDS:
        if spec.get(name) != preprocessing.get(name):
            return f"preprocessing.{name} is {spec.get(name)!r}, training used {preprocessing.get(name)!r}"
    return None


def _task_metric(predictions, y_test, x_test, task: str) -> float:
    if task == "classifier":
        return float(np.mean(predictions.argmax(-1) == y_test))
    return float(np.mean((predictions - x_test) ** 2))


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - test) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10.0 * np.log10(signal / noise)


def _infer_mode(path: Path) -> str:
    """The mode of a foreign artifact (no sidecar), from its input tensor's type."""
    from edge_runtime import load

    dtype = load(path).input.dtype
    return {"int8": "int8", "uint8": "int8", "int16": "int16x8"}.get(dtype, "float32")


def _compare(path: Path, sidecar: dict, reference, output, x_test, y_test, task: str) -> dict[str, Any]:
    mode = sidecar["mode"]
    keras_metric = _task_metric(reference, y_test, x_test, task)
    metric_value = _task_metric(output, y_test, x_test, task)
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
        "gate_kind": QUANT_MODES[mode].gate_kind if mode in QUANT_MODES else "quantized",
        "metric": "accuracy" if task == "classifier" else "reconstruction_mse",
        "metric_value": metric_value, "keras_metric_value": keras_metric,
        "metric_drop": float(metric_drop), "top1_agreement": agreement,
        "max_abs_error": float(error.max()), "mean_abs_error": float(error.mean()),
        "sqnr_db": sqnr_db(reference, output), "size_bytes": path.stat().st_size,
        "per_class_accuracy": per_class, **intervals,
    }


def classifier_intervals(reference: np.ndarray, output: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
    """95% intervals of an artifact's accuracy, its agreement with Keras (Wilson) and its
    accuracy drop (paired: the same test samples through both)."""
    from pipeline.stats import paired_drop, wilson

    n = len(y_test)
    reference_right, output_right = reference.argmax(-1) == y_test, output.argmax(-1) == y_test
    agree = int(np.sum(output.argmax(-1) == reference.argmax(-1)))
    drop = paired_drop(reference_right, output_right)
    return {"accuracy_ci95": list(wilson(int(output_right.sum()), n)),
            "keras_accuracy_ci95": list(wilson(int(reference_right.sum()), n)),
            "top1_agreement_ci95": list(wilson(agree, n)), "metric_drop_ci95": drop["ci95"],
            "metric_drop_paired": {k: drop[k] for k in ("lost", "gained", "n", "method")}}


def _apply_gates(row: dict, rules: dict[str, tuple[str, float]]) -> dict[str, dict]:
    """Each gate: its value, pass/fail by the point estimate (the exit code), and a verdict
    from the value's 95% interval: ``inconclusive`` when it straddles the threshold, with the
    test samples that would settle it. Exact figures (a worst-case error, an agreement that
    must be 100%) have no interval: their verdict is the point's."""
    from pipeline.stats import drop_samples_needed, proportion_samples_needed, verdict

    results = {}
    for metric, (op, threshold) in rules.items():
        value = row[metric]
        if value is None:  # e.g. top-1 agreement of an autoencoder
            results[metric] = {"op": op, "threshold": threshold, "value": None, "passed": True, "verdict": "pass"}
            continue
        passed = value <= threshold + 1e-12 if op == "<=" else value >= threshold - 1e-12
        ci95 = row.get(f"{metric}_ci95")
        exact = ci95 is None or (metric.endswith("top1_agreement") and threshold >= 1.0)
        gate = {"op": op, "threshold": threshold, "value": value, "passed": bool(passed),
                "verdict": verdict(op, threshold, value, ci95, exact=exact)}
        if not exact:
            gate["ci95"] = ci95
        if gate["verdict"] == "inconclusive":
            needed = (drop_samples_needed({**row["metric_drop_paired"], "drop": value}, threshold)
                      if metric == "metric_drop" and "metric_drop_paired" in row
                      else proportion_samples_needed(value, threshold))
            gate["samples_to_settle"] = needed
        results[metric] = gate
    return results


def inconclusive_gates(report: dict) -> list[str]:
    """``artifact: gate (value, 95% interval, threshold; ~N test samples would settle it)``
    for every gate whose interval straddles its threshold."""
    found = []
    for row in report["artifacts"]:
        for name, gate in row["gates"].items():
            if gate.get("verdict") == "inconclusive":
                low, high = gate["ci95"]
                settle = gate.get("samples_to_settle")
                found.append(f"{row['artifact']} {name} {_shown(name, gate['value'])} (95% interval "
                             f"{_shown(name, low)} to {_shown(name, high)}, gate {gate['op']} {_shown(name, gate['threshold'])}"
                             + (f"; about {settle:,} test samples would settle it" if settle else "") + ")")
    return found


def _shown(metric: str, value: float) -> str:
    return f"{value * 100:.2f}{' pt' if metric == 'metric_drop' else '%'}" if "agreement" in metric or metric == "metric_drop" else f"{value:g}"


# The same model in both runtimes: (TFLite, ONNX) artifact kinds.
_PAIRS = (("float32.tflite", "float32.onnx"), ("int8.tflite", "int8.onnx"),
          ("int8.tflite", "int8_tflite.onnx"))


def _cross_runtime(outputs: dict[str, np.ndarray]) -> list[dict]:
    rows = []
    for pruned in (False, True):
        for left, right in _PAIRS:
            left, right = artifact_file(left, pruned), artifact_file(right, pruned)
            if left in outputs and right in outputs:
                a, b = outputs[left], outputs[right]
                rows.append({"tflite": left, "onnx": right,
                             "top1_agreement": float(np.mean(a.argmax(-1) == b.argmax(-1))),
                             "max_abs_difference": float(np.abs(a - b).max())})
    return rows


# --explain runs the quantization debugger on this many test samples, drawn with the run's
# seed (its per-layer errors are averages over samples: a few dozen settle their ranking).
EXPLAIN_SAMPLES = 64


def _explain(context: RunContext, path: Path, x_test: np.ndarray, top: int) -> dict:
    from pipeline.explain import explain_onnx, explain_tflite

    picked = context.dataset.sample_indices("test", EXPLAIN_SAMPLES, context.seed)
    subset = x_test[picked]
    result = (explain_tflite if path.suffix == ".tflite" else explain_onnx)(context, path, subset, top)
    result["test_samples"] = {"drawn": int(len(picked)), "of": int(len(x_test)), "seed": context.seed}
    return result
