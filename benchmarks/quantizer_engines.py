"""Post-training quantization two ways, side by side: TensorFlow's converter (what LiteRT's
documentation calls legacy; `quantize --engine converter`) and LiteRT Quantizer (the renamed
ai-edge-quantizer, what `pipeline quantize` uses: a float32 .tflite first, then a recipe), on
one trained run. Its static modes (int8, int16x8) four ways: LiteRT Quantizer's own calibration
(a moving average of each sample's min/max, "LQ moving avg"), and the pipeline's
`--calibration` methods, minmax (each tensor's global range), percentile and mse.

For each mode both engines can make: test accuracy with its Wilson interval, top-1 agreement
with the Keras model, the paired accuracy difference between the two engines' artifacts, size,
p50 (interleaved rounds, each a fresh process), and whether TFLite Micro runs it. Same
calibration samples for both (the run's seed). Measures only; the pipeline is unchanged.

    python benchmarks/quantizer_engines.py                      # trains the seed CNN on digits
    python benchmarks/quantizer_engines.py --run runs/latest    # or a run you have
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The modes either engine makes: the converter's, and LiteRT Quantizer's (its recipes,
# pipeline.formats.litert_quantizer.RECIPES; the static ones calibrated both ways).
CONVERTER_MODES = ("int8", "int16x8", "dynamic", "float16")
ENGINES = ("LQ moving avg", "LQ minmax", "LQ percentile", "LQ mse")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained run (default: train the seed CNN on digits)")
    parser.add_argument("--calibration-samples", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from pipeline.core.backend import import_keras

    import_keras()
    with tempfile.TemporaryDirectory(prefix="engines-") as tmp:
        run_dir = args.run or _train(Path(tmp))
        compare(run_dir, Path(tmp) / "artifacts", args.calibration_samples, args.rounds)


def _train(tmp: Path) -> Path:
    from pipeline.config.stages import TrainOptions
    from pipeline.training.train import train

    return train(tmp / "run", TrainOptions(), runs_root=tmp, verbose=0).run_dir


def compare(run_dir: Path, out: Path, samples: int, rounds: int) -> None:
    from edge_runtime import load
    from pipeline.core.stats import paired_drop, wilson
    from pipeline.data.context import RunContext
    from pipeline.device.timing import measure_rounds
    from pipeline.formats.litert_quantizer import RECIPES, quantize_with_recipe
    from pipeline.formats.micro import run_micro, unavailable
    from pipeline.formats.tflite import float_tflite_with_signature, to_tflite

    out.mkdir(parents=True, exist_ok=True)
    context = RunContext.open(run_dir)
    model = context.load_model()
    _, calibration = context.calibration(samples)
    x_test, y_test = context.dataset.split("test")
    keras_top1 = model.predict(x_test, batch_size=256, verbose=0).argmax(-1)
    float_model = float_tflite_with_signature(model)
    built: dict[tuple[str, str], Path] = {}
    for mode in dict.fromkeys([*CONVERTER_MODES, *RECIPES]):
        recipe_name = RECIPES.get(mode)
        if mode in CONVERTER_MODES:
            path = out / f"{mode}_converter.tflite"
            path.write_bytes(to_tflite(model, mode, calibration=calibration))
            built[(mode, "converter")] = path
        static = recipe_name.startswith("static")
        for engine in ENGINES if static else ("LiteRT Quantizer",):
            path = out / f"{mode}_{engine.replace(' ', '_')}.tflite"
            method = engine.split()[-1] if engine in ENGINES[1:] else "minmax"
            try:
                path.write_bytes(quantize_with_recipe(float_model, mode, calibration if static else None,
                                                      global_range=engine != ENGINES[0], method=method))
                built[(mode, engine)] = path
            except Exception as exc:  # noqa: BLE001 - report what the engine said, go on
                print(f"{mode} via {engine} ({recipe_name}) failed: {str(exc).splitlines()[0][:160]}")
    paths = list(built.values())
    timing = measure_rounds(paths, x_test[0], threads=[1], warmup=20, runs=200, min_seconds=2.0, rounds=rounds)
    p50 = {Path(r["artifact"]).name if "/" in str(r["artifact"]) else r["artifact"]: r for r in timing["results"]}
    micro_reason = unavailable()
    right: dict[tuple[str, str], np.ndarray] = {}
    print(f"{context.train_info.get('model')} on {context.train_info['data']['name']}: {len(y_test)} test samples, "
          f"{len(calibration)} calibration samples; p50 at batch 1, one thread, median of {rounds} interleaved rounds "
          f"({(timing['device'] or {}).get('cpu_model') or 'this machine'})")
    print(f"{'mode':17s} {'engine':17s} {'I/O':>7s} {'accuracy [95%]':>24s} {'agree':>7s} {'size KiB':>9s} "
          f"{'p50 ms':>8s} {'spread':>7s}  TFLM")
    keras_right = keras_top1 == y_test
    keras_low, keras_high = wilson(int(keras_right.sum()), len(y_test))
    print(f"{'(Keras float32)':17s} {'':17s} {'':>7s} {keras_right.mean():7.2%} [{keras_low:.2%}, {keras_high:.2%}]")
    for (mode, engine), path in built.items():
        runner = load(path)
        predicted = runner.predict(x_test).reshape(len(x_test), -1).argmax(-1)
        right[(mode, engine)] = predicted == y_test
        low, high = wilson(int(right[(mode, engine)].sum()), len(y_test))
        timed = p50.get(path.name) or next(r for r in timing["results"] if str(r["artifact"]).endswith(path.name))
        micro = micro_reason or _micro_runs(run_micro, path, runner)
        print(f"{mode:17s} {engine:17s} {runner.input.dtype:>7s} {right[(mode, engine)].mean():7.2%} "
              f"[{low:.2%}, {high:.2%}] {np.mean(predicted == keras_top1):7.2%} {path.stat().st_size / 1024:9.1f} "
              f"{timed['p50_ms']:8.4f} {timed['p50_spread_ms']:7.4f}  {micro}")
    print()
    for mode in RECIPES:
        for engine in ("LiteRT Quantizer", *ENGINES):
            pair = [(mode, "converter"), (mode, engine)]
            if not all(p in right for p in pair):
                continue
            drop = paired_drop(right[pair[0]], right[pair[1]])
            low, high = (0.0 - drop["ci95"][1]) * 100 + 0.0, (0.0 - drop["ci95"][0]) * 100 + 0.0
            gain = (0.0 - drop["drop"]) * 100 + 0.0
            print(f"{mode}: {engine} minus converter accuracy {gain:+.2f} pt "
                  f"[{low:+.2f}, {high:+.2f}] (paired, same test samples; "
                  f"{drop['lost']} lost, {drop['gained']} gained)")


def _micro_runs(run_micro, path: Path, runner) -> str:
    if runner.input.dtype not in ("int8", "int16") and not path.name.startswith(("int8", "int16x8")):
        return "not an integer model"
    try:
        result = run_micro(path)
    except Exception as exc:  # noqa: BLE001 - TFLM refusing the model is the finding
        return f"no: {str(exc).splitlines()[0][:80]}"
    return f"yes (arena {result.arena_bytes:,} B)"


if __name__ == "__main__":
    main()
