"""``edge-runtime info|predict|eval|bench MODEL``: the device-side command line (argparse only)."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from edge_runtime.bench import DEFAULT_MIN_SECONDS
from edge_runtime.errors import EdgeRuntimeError, InputError


def _number_in(kind, low, high):
    """An argparse type: a finite ``kind`` number within [low, high]."""
    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{value}'") from None
        if not (math.isfinite(number) and low <= number <= high):
            raise argparse.ArgumentTypeError(f"must lie in [{low:g}, {high:g}], got {value}")
        return number
    return parse


_thread_count = _number_in(int, 1, 1024)


def _threads(value: str) -> list[int | None]:
    return [_thread_count(v) for v in value.split(",") if v.strip()] or [None]


class _OneLineParser(argparse.ArgumentParser):
    """Usage mistakes are one ``error:`` line and exit 2, like every other error."""

    def error(self, message: str):
        print(f"error: {self.prog}: {' '.join(message.split())}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    from edge_runtime import __version__

    parser = _OneLineParser(prog="edge-runtime", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"edge-runtime {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("info", "inputs, outputs, quantization, ops, size"),
                            ("predict", "run an .npy/.npz of inputs and print the outputs"),
                            ("eval", "accuracy on an .npz with x and y"),
                            ("bench", "latency: p50/p90/p99, throughput, load time, peak RSS")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("model", type=Path)
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.add_argument("--isolate", action="store_true",
                         help="probe the model in a child process first (untrusted files)")
        if name != "info":
            sub.add_argument("--no-xnnpack", action="store_true", help="disable XNNPACK (LiteRT)")
        if name in ("predict", "eval"):
            sub.add_argument("inputs", type=Path, help=".npy (predict) or .npz with x, y")
            sub.add_argument("--raw", action="store_true",
                             help="inputs are raw (e.g. uint8 pixels): apply the sidecar's preprocessing")
            sub.add_argument("--threads", type=_thread_count, default=None)
        if name == "bench":
            sub.add_argument("--threads", type=_threads, default=[None], help="e.g. 1,2,4")
            sub.add_argument("--warmup", type=_number_in(int, 0, 1_000_000), default=20)
            sub.add_argument("--warmup-seconds", type=_number_in(float, 0.0, 3600.0), default=0.0)
            sub.add_argument("--runs", type=_number_in(int, 1, 10_000_000), default=100)
            sub.add_argument("--min-seconds", type=_number_in(float, 0.0, 3600.0),
                             default=DEFAULT_MIN_SECONDS, help="keep timing at least this long")
            sub.add_argument("--sample", type=Path, help=".npy with one model-ready input")
    return parser


def _info(args) -> dict:
    from edge_runtime.runner import info

    return info(args.model, isolate=args.isolate)


def _load_array(path: Path, key: str | None = None) -> np.ndarray:
    from edge_runtime.arrays import read_array

    return read_array(path, key)


def _predict(args) -> dict:
    from edge_runtime.arrays import check_samples
    from edge_runtime.runner import load

    inputs = check_samples(_load_array(args.inputs), str(args.inputs))
    runner = load(args.model, threads=args.threads, xnnpack=not args.no_xnnpack, isolate=args.isolate)
    outputs = runner.predict(inputs, raw=args.raw)
    task = runner.sidecar.get("task")
    if task in ("reconstruction", "autoencoder"):
        scores = _anomaly_scores(runner, inputs, outputs, args.raw)
        threshold = (runner.sidecar.get("anomaly") or {}).get("threshold")
        return {"task": "reconstruction", "anomaly_score": scores.tolist(), "threshold": threshold,
                "anomaly": None if threshold is None else [bool(s > threshold) for s in scores]}
    if task == "regression":
        return {"task": "regression", "values": outputs.reshape(len(outputs), -1).tolist()}
    names = _class_names(runner, outputs)
    top1 = outputs.reshape(len(outputs), -1).argmax(1)
    return {"outputs": outputs.tolist(), "top1": top1.tolist(),
            "labels": [names[i] for i in top1] if names and outputs.ndim == 2 else None}


def _anomaly_scores(runner, inputs: np.ndarray, outputs: np.ndarray, raw: bool) -> np.ndarray:
    """Each sample's reconstruction error against the model input it was given (the raw
    samples through the sidecar's preprocessing, as the model saw them)."""
    from edge_runtime.preprocessing import apply_preprocessing
    from edge_runtime.tasks import anomaly_scores

    fed = apply_preprocessing(inputs, runner.sidecar.get("preprocessing")) if raw else inputs
    return anomaly_scores(outputs, fed)


def _eval(args) -> dict:
    from edge_runtime.arrays import check_labels, check_samples
    from edge_runtime.runner import load

    x = check_samples(_load_array(args.inputs, "x"), f"{args.inputs}:x")
    y = _load_array(args.inputs, "y")
    runner = load(args.model, threads=args.threads, xnnpack=not args.no_xnnpack, isolate=args.isolate)
    if runner.sidecar.get("task") in ("reconstruction", "autoencoder", "regression"):
        return _eval_task(args, runner, x, y)
    dims = runner.outputs[0].shape[1:]
    classes = int(np.prod(dims)) if all(isinstance(d, int) and d > 0 for d in dims) else None
    y = check_labels(y, classes, f"{args.inputs}:y")
    if len(x) != len(y):
        raise InputError(f"{args.inputs}: {len(x)} inputs but {len(y)} labels")
    outputs = runner.predict(x, raw=args.raw)
    predicted = outputs.reshape(len(outputs), -1).argmax(1)
    return {"model": str(args.model), "samples": int(len(y)),
            "accuracy": float(np.mean(predicted == y)), "stateful_reset": runner.stateful}


def _eval_task(args, runner, x: np.ndarray, y: np.ndarray) -> dict:
    """An autoencoder's ROC AUC (labels 0 normal, 1 anomalous) with DeLong's interval; a
    regression's MAE, with its interval."""
    from edge_runtime.tasks import TaskError, absolute_errors, auc_interval, check_scores, delong, mean_interval

    y = np.asarray(y)
    if y.dtype.kind not in "fiub" or len(y) != len(x) or not np.all(np.isfinite(y)):
        raise InputError(f"{args.inputs}:y must hold one finite number per input ({len(x)}), "
                         f"got {y.dtype}{list(y.shape)}")
    outputs = runner.predict(x, raw=args.raw)
    found = {"model": str(args.model), "samples": int(len(x)), "task": runner.sidecar["task"]}
    try:
        if runner.sidecar["task"] == "regression":
            errors = absolute_errors(outputs, y)
            return {**found, "mae": float(errors.mean()), "mae_ci95": mean_interval(errors)}
        if not np.all(np.isin(y, (0, 1))):
            raise InputError(f"{args.inputs}:y must hold anomaly labels 0 (normal) or 1 (anomalous)")
        scores = _anomaly_scores(runner, x, outputs, args.raw)
        check_scores(scores)
        aucs, covariance = delong(scores, y.astype(np.int64))
    except TaskError as exc:
        raise InputError(f"{args.inputs}: {exc}") from None
    return {**found, "auc": float(aucs[0]), "auc_ci95": auc_interval(aucs[0], covariance[0, 0])}


def _class_names(runner, outputs: np.ndarray) -> list[str]:
    """The sidecar's class names, when they name every output (a sidecar that names fewer or
    more than the model has is not the model's)."""
    from edge_runtime.errors import ArtifactError

    names = runner.sidecar.get("class_names") or []
    if names and outputs.ndim == 2 and len(names) != outputs.shape[1]:
        raise ArtifactError(f"{runner.path.name}'s sidecar names {len(names)} classes but the model has "
                            f"{outputs.shape[1]} outputs: the sidecar is not this model's")
    return names


def _bench(args) -> dict:
    from edge_runtime.arrays import check_samples
    from edge_runtime.bench import bench_file, device_description

    sample = check_samples(_load_array(args.sample), str(args.sample)) if args.sample else None
    rows = bench_file(args.model, threads=args.threads, xnnpack=not args.no_xnnpack, isolate=args.isolate,
                      sample=sample, warmup=args.warmup, warmup_seconds=args.warmup_seconds,
                      runs=args.runs, min_seconds=args.min_seconds)
    return {"device": device_description(), "results": rows}


def _print_human(command: str, result: dict) -> None:
    if command == "bench":
        for row in result["results"]:
            print(f"{row['artifact']} [{row['backend']}, threads {row['threads'] or 'default'}]: "
                  f"p50 {row['p50_ms']:.3f} ms, p90 {row['p90_ms']:.3f} ms, p99 {row['p99_ms']:.3f} ms, "
                  f"{row['throughput_per_s']:.0f}/s ({row['method']['runs']} runs)")
    elif command == "eval":
        metric = next(m for m in ("accuracy", "auc", "mae") if m in result)
        interval = result.get(f"{metric}_ci95")
        print(f"{metric} {result[metric]:.4f} on {result['samples']} samples"
              + (f" (95% interval {interval[0]:.4f} to {interval[1]:.4f})" if interval else ""))
    elif command == "info":
        _print_info(result)
    else:
        _print_predictions(result)


def _print_predictions(result: dict) -> None:
    """One line a sample: the top class and its score; an autoencoder's anomaly score and
    decision; a regression's values."""
    if "anomaly_score" in result:
        for i, score in enumerate(result["anomaly_score"]):
            decision = "" if result["anomaly"] is None else ("  anomaly" if result["anomaly"][i] else "  normal")
            print(f"{i}: score {score:.5g}{decision}")
        return
    if "values" in result:
        for i, values in enumerate(result["values"]):
            print(f"{i}: " + " ".join(f"{v:.5g}" for v in values[:8]) + (" …" if len(values) > 8 else ""))
        return
    for i, (output, top1) in enumerate(zip(result["outputs"], result["top1"])):
        values = np.asarray(output, dtype=np.float64).reshape(-1)
        if result["labels"] is not None:
            print(f"{i}: {result['labels'][i]} ({values[top1]:.4g})")
        else:
            shown = " ".join(f"{v:.4g}" for v in values[:8])
            print(f"{i}: {shown}{' …' if values.size > 8 else ''}")


def _print_info(result: dict) -> None:
    """``edge-runtime info`` for a person (``--json`` for a program)."""
    print(f"{result['model']}: {result['backend']}, {result['size_bytes'] / 1024:.1f} KiB, "
          f"mode {result['mode'] or 'unknown (no sidecar)'}")
    for kind in ("inputs", "outputs"):
        for tensor in result[kind]:
            quant = (f", scale {tensor['scale']:.6g} zero point {tensor['zero_point']}"
                     if tensor["scale"] else "")
            print(f"  {kind[:-1]:6s} {tensor['name']}: {tensor['dtype']} {tuple(tensor['shape'])}{quant}")
    spec = result["preprocessing"]
    if spec:
        print(f"  raw input: {spec.get('raw_dtype')} x {spec.get('scale'):.6g}"
              + (f", mean {spec['mean']}, std {spec['std']}" if spec.get("mean") is not None else ""))
    if result["ops"]:
        print("  ops: " + ", ".join(f"{op} x{count}" for op, count in result["ops"].items()))
    if "xnnpack_delegated" in result:
        print(f"  XNNPACK: {'yes' if result['xnnpack_delegated'] else 'no'}; "
              f"stateful: {'yes' if result['stateful'] else 'no'}")


def main(argv: list[str] | None = None) -> int:
    from edge_runtime.errors import Terminated, exit_on_sigterm, filesystem_error

    args = _parser().parse_args(argv)
    handlers = {"info": _info, "predict": _predict, "eval": _eval, "bench": _bench}
    exit_on_sigterm()
    try:
        result = handlers[args.command](args)
    except EdgeRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        known = filesystem_error(exc)
        if known is None:
            raise
        print(f"error: {known[0]}", file=sys.stderr)
        return known[1]
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated (SIGTERM)", file=sys.stderr)
        return Terminated.exit_code
    if args.json:
        print(json.dumps(result))
    else:
        _print_human(args.command, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def console() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # output piped into `head`: not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)
