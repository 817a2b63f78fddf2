"""What ``pipeline verify`` checks beyond accuracy parity: LiteRT's signature runner against
the plain invoke, an ``.ort`` against its ``.onnx``, the mobile GPU delegate, TFLite Micro
(parity and memory budgets), the sidecar's preprocessing against training's, and the same
model in both runtimes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.artifact import read_sidecar
from pipeline.checking.gates import apply_gates
from pipeline.config.gates import VerifyOptions
from pipeline.core.errors import UsageError
from pipeline.formats.kinds import PARITY_PAIRS, artifact_file

# Samples run through LiteRT's own SignatureRunner and compared with the plain invoke.
SIGNATURE_SAMPLES = 16


def signature_parity(path: Path, x_test: np.ndarray) -> dict:
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


def ort_parity(row: dict, path: Path, outputs: dict, predict, task: str) -> None:
    """Gate ``onnx_parity``: the ``.ort``'s outputs against its ``.onnx`` twin's (the one its
    sidecar names, in the same directory) on every test sample; ``predict(path)`` runs an
    artifact on them."""
    twin_name = ((read_sidecar(path) or {}).get("options") or {}).get("onnx")
    twin = path.with_name(twin_name) if isinstance(twin_name, str) and "/" not in twin_name else None
    if twin is None or not twin.is_file():
        difference, value = None, "no .onnx twin to compare with"
    else:
        if twin.name not in outputs:
            outputs[twin.name] = predict(twin)
        difference = float(np.max(np.abs(outputs[path.name].astype(np.float64) - outputs[twin.name])))
        value = difference
    passed = difference is not None and difference <= ORT_TOLERANCE
    row["onnx_twin"] = twin.name if twin is not None else None
    gate = {"op": "<=", "threshold": ORT_TOLERANCE, "value": value, "passed": passed}
    if difference is not None and row.get("mode") not in ("float32", "float16") and task == "classifier":
        # An integer .ort is saved with ONNX Runtime's arm kernels chosen (u8s8): on an x86
        # without VNNI they saturate where the .onnx's own x86 choice does not (measured on an
        # AVX2 EPYC: outputs up to 0.33 apart). Its gate is top-1 agreement with the .onnx.
        agreement = float(np.mean(outputs[path.name].argmax(-1) == outputs[twin.name].argmax(-1)))
        gate = {"op": ">=", "threshold": ORT_INT_AGREEMENT, "value": agreement, "max_abs_difference": difference,
                "passed": agreement >= ORT_INT_AGREEMENT}
    gate["verdict"] = "pass" if gate["passed"] else "fail"
    row["gates"]["onnx_parity"] = gate
    row["passed"] = all(g["passed"] for g in row["gates"].values())


def gpu_delegate(path: Path) -> dict:
    from pipeline.checking.gpu_delegate import gpu_compatibility
    from pipeline.core.backend import tensorflow_available

    if not tensorflow_available():  # the analyzer is TensorFlow's: said, not skipped silently
        import logging

        logging.getLogger("pipeline").warning(
            "warning: %s: GPU-delegate compatibility not checked (TensorFlow's analyzer; this "
            "environment has no TensorFlow)", Path(path).name)
        return {"error": "not checked: TensorFlow's GPU-delegate analyzer; this environment has no TensorFlow"}

    try:
        return gpu_compatibility(path)
    except (ValueError, RuntimeError) as exc:  # an analyzer without a verdict: say so, do not fail
        return {"error": str(exc)[:200]}


def runs_on_micro(path: Path, mode: str) -> bool:
    from pipeline.formats.kinds import MICRO_MODES

    return path.suffix == ".tflite" and mode in MICRO_MODES


# TFLite Micro runs its reference kernels one sample at a time (a ResNet-8 on CIFAR-10: tens
# of ms each): on a larger test split it checks this many samples, drawn with the run's seed,
# and its agreement carries the subset's Wilson interval.
MICRO_SAMPLES = 1000


def checked_samples(count: int, seed: int) -> np.ndarray:
    """The test samples a one-sample-a-call check runs: all, or MICRO_SAMPLES drawn with the seed."""
    if count <= MICRO_SAMPLES:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, MICRO_SAMPLES, replace=False))


def _micro_task(task: str, both: dict, x, y, threshold: float | None) -> dict:
    """An autoencoder's anomaly scores and decisions, or a regression's MAE, from TFLM's outputs
    against those from LiteRT's reference kernels on the same samples."""
    from edge_runtime.tasks import sample_errors
    from pipeline.core.stats import wilson

    errors = [sample_errors(task, both[side].reshape(len(x), -1), x, y) for side in ("reference", "tflm")]
    if task == "regression":
        mae = [float(e.mean()) for e in errors]
        return {"mae": mae[1], "reference_mae": mae[0], "metric_drop": (mae[1] - mae[0]) / max(mae[0], 1e-12)}
    scores = errors
    relative = np.abs(scores[1] - scores[0]) / np.maximum(scores[0], 1e-12)
    found = {"score_max_relative_difference": float(np.max(relative))}
    if threshold is not None:
        same = (scores[0] > threshold) == (scores[1] > threshold)
        found.update(decision_agreement=float(same.mean()),
                     decision_agreement_ci95=list(wilson(int(same.sum()), len(same))))
    return found


def kernel_agreement(path: Path, x_test, verified, seed: int = 0) -> dict:
    """The artifact against itself: LiteRT's reference kernels against the outputs verify
    checked (its default XNNPACK path), top-1 on the same test samples (at most MICRO_SAMPLES,
    drawn with the run's seed), with the Wilson interval. Two integer implementations of one
    file differ by their rounding: a gate on a float simulation of the file can ask no more."""
    from edge_runtime import load
    from edge_runtime.runner import quantize
    from pipeline.core.stats import wilson
    from pipeline.formats.micro import litert_reference

    picked = checked_samples(len(x_test), seed)
    runner = load(path, xnnpack=False)
    feeds = quantize(np.asarray(x_test[picked], dtype=np.float32), runner.input)
    reference = litert_reference(path, feeds, stateful=runner.stateful)
    agreeing = int(np.sum(reference.argmax(1) == verified[picked].reshape(len(picked), -1).argmax(1)))
    return {"kernels": "LiteRT reference (BUILTIN_REF) against XNNPACK", "samples": int(len(picked)),
            "top1_agreement": agreeing / len(picked), "top1_agreement_ci95": list(wilson(agreeing, len(picked)))}


def kernel_floor(rules: dict, kernels: dict | None) -> dict:
    """The QAT gates with fake_quant_agreement's threshold lowered, where it must be, to the 95%
    lower bound of the artifact's agreement with itself across LiteRT's two kernel sets."""
    if not kernels or "fake_quant_agreement" not in rules:
        return rules
    op, threshold = rules["fake_quant_agreement"]
    return {**rules, "fake_quant_agreement": (op, min(threshold, kernels["top1_agreement_ci95"][0]))}


def micro_check(path: Path, x_test, y_test, verified, task: str, rules, options: VerifyOptions,
                seed: int = 0, threshold: float | None = None) -> dict:
    """TFLM parity and memory of one integer TFLite artifact, with its gates: agreement with
    LiteRT, and the RAM/flash budgets when given. A model TFLM cannot run fails only when a
    budget says a microcontroller is the target."""
    from pipeline.formats.micro import MicroError, micro_parity, unavailable

    budgets = {"ram_kb": options.max_ram_kb, "flash_kb": options.max_flash_kb}
    targeted = any(v is not None for v in budgets.values())
    reason = unavailable()
    if reason:
        if targeted:
            raise UsageError(f"--ram-kb/--flash-kb need TFLite Micro to measure: {reason}")
        return {"micro": {"skipped": reason}, "micro_gates": {}}
    picked = checked_samples(len(x_test), seed)
    try:
        micro = micro_parity(path, x_test[picked], None if y_test is None else y_test[picked],
                             verified[picked], task)
    except MicroError as exc:
        gate = {"op": "runs", "threshold": "on TFLM", "value": str(exc), "passed": not targeted}
        return {"micro": {"error": str(exc)}, "micro_gates": {"tflm": gate}}
    if micro.get("top1_agreement") is not None and micro.get("samples"):
        from pipeline.core.stats import wilson

        micro["top1_agreement_ci95"] = list(wilson(round(micro["top1_agreement"] * micro["samples"]), micro["samples"]))
    micro["test_samples"] = {"checked": int(len(picked)), "of": int(len(x_test)),
                             "seed": seed if len(picked) < len(x_test) else None}
    both = micro.pop("outputs")
    if task != "classifier":  # the task's own figures: TFLM's against LiteRT's reference kernels'
        micro.update(_micro_task(task, both, x_test[picked], None if y_test is None else y_test[picked], threshold))
    gates = {f"tflm_{metric}": result for metric, result in apply_gates(micro, rules).items()}
    measured = {"ram_kb": micro["arena_bytes"], "flash_kb": micro["flash_bytes"]}
    for name, budget in budgets.items():
        if budget is not None:
            value = measured[name] / 1024
            gates[name] = {"op": "<=", "threshold": budget, "value": value, "bytes": measured[name],
                           "passed": bool(value <= budget)}
    return {"micro": micro, "micro_gates": gates}


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


def cross_runtime(outputs: dict[str, np.ndarray]) -> list[dict]:
    rows = []
    for pruned in (False, True):
        for left, right in PARITY_PAIRS:
            left, right = artifact_file(left, pruned), artifact_file(right, pruned)
            if left in outputs and right in outputs:
                a, b = outputs[left], outputs[right]
                rows.append({"tflite": left, "onnx": right,
                             "top1_agreement": float(np.mean(a.argmax(-1) == b.argmax(-1))),
                             "max_abs_difference": float(np.abs(a - b).max())})
    return rows
