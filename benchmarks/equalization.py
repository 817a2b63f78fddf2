"""Cross-layer equalization (Nagel et al., 2019) measured on a depthwise model quantized with
per-tensor weights, the case it is known for: one scale per weight tensor must cover every
channel's range, and a depthwise layer's channels differ by orders of magnitude.

On the float32 .tflite (batch norm already folded by the converter), each pair of convolutions
where the first (CONV_2D or DEPTHWISE_CONV_2D, fused ReLU, whose output only the second reads)
feeds the second has its channel c rescaled: the first's output channel (weights and bias) by
1/s_c, the second's input channel by s_c, s_c = sqrt(r1_c / r2_c) with r the channel's largest
absolute weight. ReLU(x / s) = ReLU(x) / s, so the float model computes the same function (the
script checks it) while the two layers' per-channel ranges become equal. Then int8 by LiteRT
Quantizer (min-max calibration), weights per tensor or per channel, with and without bias
correction (``bias_corrected``); test accuracy, agreement with Keras, paired differences.
Measures only: the pipeline does not equalize.

    python benchmarks/equalization.py                  # trains mobilenet_v1 (alpha 0.25) on digits
    python benchmarks/equalization.py --run RUN        # a depthwise model's run
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONVS = ("CONV_2D", "DEPTHWISE_CONV_2D")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained run (default: train mobilenet_v1 on digits)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--calibration-samples", type=int, default=300)
    args = parser.parse_args()
    from pipeline.core.backend import import_keras

    import_keras()
    with tempfile.TemporaryDirectory(prefix="equalization-") as tmp:
        run_dir = args.run or _train(Path(tmp), args.epochs)
        compare(run_dir, args.calibration_samples)


def _train(tmp: Path, epochs: int) -> Path:
    from pipeline.config.stages import TrainOptions
    from pipeline.training.train import train

    return train(tmp / "run", TrainOptions(model="mobilenet_v1", epochs=epochs), runs_root=tmp, verbose=0).run_dir


def equalize(content: bytes) -> tuple[bytes, int]:
    """``content`` with every equalizable pair rescaled; also how many pairs were."""
    from pipeline.formats.tflite_meta import _schema, read_model, write_model

    schema = _schema()
    model = read_model(content)
    graph = model.subgraphs[0]
    names = {code_index: _op_name(schema, code) for code_index, code in enumerate(model.operatorCodes)}
    readers: dict[int, list] = {}
    for op in graph.operators:
        for tensor in op.inputs:
            readers.setdefault(int(tensor), []).append(op)
    relu = schema.ActivationFunctionType.RELU
    pairs = 0
    for first in graph.operators:
        if names[first.opcodeIndex] not in CONVS or first.builtinOptions.fusedActivationFunction != relu:
            continue
        output = int(first.outputs[0])
        following = readers.get(output, [])
        if len(following) != 1 or names[following[0].opcodeIndex] not in CONVS or output in graph.outputs:
            continue
        second = following[0]
        if int(second.inputs[0]) != output:
            continue
        w1, b1, w2 = (_weights(model, graph, int(i)) for i in (first.inputs[1], first.inputs[2], second.inputs[1]))
        if w1 is None or b1 is None or w2 is None:
            continue
        depthwise1 = names[first.opcodeIndex] == "DEPTHWISE_CONV_2D"
        out_axis = 3 if depthwise1 else 0                      # conv: [O, kh, kw, I]; depthwise: [1, kh, kw, C]
        in_axis = 3                                             # the second's input channel: last axis either way
        r1 = np.abs(w1).max(axis=tuple(a for a in range(4) if a != out_axis))
        r2 = np.abs(w2).max(axis=tuple(a for a in range(4) if a != in_axis))
        if r1.shape != r2.shape or np.any(r1 <= 0) or np.any(r2 <= 0):
            continue
        scale = np.sqrt(r1 / r2).astype(np.float32)
        shape1 = [1, 1, 1, 1]
        shape1[out_axis] = -1
        _store(model, graph, int(first.inputs[1]), w1 / scale.reshape(shape1))
        _store(model, graph, int(first.inputs[2]), b1 / scale)
        _store(model, graph, int(second.inputs[1]), w2 * scale.reshape(1, 1, 1, -1))
        pairs += 1
    return write_model(model), pairs


def bias_corrected(content: bytes, calibration: np.ndarray, per_tensor: bool) -> bytes:
    """Empirical bias correction (the second half of Nagel et al.'s data-free quantization):
    each convolution's bias minus the expected error its int8 weights will add, sum over the
    kernel of (W_q - W) times the mean of its input channel over the calibration samples. W_q:
    symmetric int8 as LiteRT Quantizer makes it (per tensor or per output channel)."""
    from ai_edge_litert.interpreter import Interpreter

    from pipeline.formats.tflite import SIGNATURE, SIGNATURE_INPUT
    from pipeline.formats.tflite_meta import _schema, read_model, write_model

    schema = _schema()
    model = read_model(content)
    graph = model.subgraphs[0]
    names = {code_index: _op_name(schema, code) for code_index, code in enumerate(model.operatorCodes)}
    convs = [op for op in graph.operators if names[op.opcodeIndex] in CONVS and len(op.inputs) > 2]
    interpreter = Interpreter(model_content=content, experimental_preserve_all_tensors=True)
    runner = interpreter.get_signature_runner(SIGNATURE)
    index = {detail["name"]: detail["index"] for detail in interpreter.get_tensor_details()}
    sums: dict[int, np.ndarray] = {}
    for sample in calibration:
        runner(**{SIGNATURE_INPUT: sample[None].astype(np.float32)})
        for op in convs:
            name = graph.tensors[int(op.inputs[0])].name
            name = name.decode() if isinstance(name, bytes) else name
            values = interpreter.get_tensor(index[name])
            sums[int(op.inputs[0])] = sums.get(int(op.inputs[0]), 0) + values.reshape(-1, values.shape[-1]).mean(0)
    for op in convs:
        weights, bias = _weights(model, graph, int(op.inputs[1])), _weights(model, graph, int(op.inputs[2]))
        if weights is None or bias is None:
            continue
        depthwise = names[op.opcodeIndex] == "DEPTHWISE_CONV_2D"
        out_axis = 3 if depthwise else 0
        reduce = tuple(a for a in range(4) if a != out_axis)
        scale = (np.abs(weights).max() if per_tensor else np.abs(weights).max(axis=reduce, keepdims=True)) / 127.0
        error = np.clip(np.round(weights / np.maximum(scale, 1e-12)), -127, 127) * scale - weights
        mean_input = sums[int(op.inputs[0])] / len(calibration)
        correction = (error[0] * mean_input).sum(axis=(0, 1)) if depthwise else (error * mean_input).sum(axis=(1, 2, 3))
        _store(model, graph, int(op.inputs[2]), bias - correction)
    return write_model(model)


def _op_name(schema, code) -> str:
    value = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    return next(name for name, number in vars(schema.BuiltinOperator).items() if number == value)


def _weights(model, graph, index: int):
    tensor = graph.tensors[index]
    data = model.buffers[tensor.buffer].data
    if data is None or len(data) == 0 or tensor.type != 0:  # float32 constants only
        return None
    return np.frombuffer(bytes(bytearray(data)), dtype=np.float32).reshape(tensor.shape)


def _store(model, graph, index: int, values: np.ndarray) -> None:
    model.buffers[graph.tensors[index].buffer].data = np.frombuffer(
        values.astype(np.float32).tobytes(), dtype=np.uint8)


def _int8(float_model: bytes, calibration: np.ndarray, per_tensor: bool) -> bytes:
    from pipeline.formats.litert_quantizer import calibrate, modules
    from pipeline.formats.tflite import SIGNATURE, SIGNATURE_INPUT

    quantizer, _, _, _ = modules()
    try:
        from litert_quantizer import qtyping, recipe_manager
    except ImportError:
        from ai_edge_quantizer import qtyping, recipe_manager
    manager = recipe_manager.RecipeManager()
    granularity = qtyping.QuantGranularity.TENSORWISE if per_tensor else qtyping.QuantGranularity.CHANNELWISE
    manager.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                              activation_num_bits=8, weight_num_bits=8, weight_granularity=granularity)
    qt = quantizer.Quantizer(bytearray(float_model))
    qt.load_quantization_recipe(manager.get_quantization_recipe())
    feeds = {SIGNATURE: [{SIGNATURE_INPUT: sample[None].astype(np.float32)} for sample in calibration]}
    return bytes(qt.quantize(calibrate(qt, float_model, feeds)).quantized_model)


def _outputs(content: bytes, x: np.ndarray) -> np.ndarray:
    from edge_runtime import load

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(content)
        return load(path).predict(x).reshape(len(x), -1)


def compare(run_dir: Path, samples: int) -> None:
    from pipeline.core.stats import paired_drop, wilson
    from pipeline.data.context import RunContext
    from pipeline.formats.tflite import float_tflite_with_signature

    context = RunContext.open(run_dir)
    model = context.load_model()
    _, calibration = context.calibration(samples)
    x_test, y_test = context.dataset.split("test")
    keras = model.predict(x_test, batch_size=256, verbose=0)
    float_model = float_tflite_with_signature(model)
    equalized, pairs = equalize(float_model)
    difference = np.abs(_outputs(equalized, x_test) - _outputs(float_model, x_test)).max()
    print(f"{context.train_info.get('model')} on {context.train_info['data']['name']}: {len(y_test)} test "
          f"samples, {len(calibration)} calibration; {pairs} layer pairs equalized; the equalized float model's "
          f"outputs differ from the original's by at most {difference:.2e}")
    keras_right = keras.argmax(-1) == y_test
    print(f"{'weights':11s} {'applied':10s} {'accuracy [95%]':>24s} {'agreement':>9s}  minus neither, paired")
    print(f"{'(Keras)':21s} {keras_right.mean():7.2%}")
    right = {}
    for per_tensor in (False, True):
        variants = {"no": float_model, "CLE": equalized,
                    "CLE + bias": bias_corrected(equalized, calibration, per_tensor),
                    "bias": bias_corrected(float_model, calibration, per_tensor)}
        for label, content in variants.items():
            top1 = _outputs(_int8(content, calibration, per_tensor), x_test).argmax(-1)
            right[(per_tensor, label)] = top1 == y_test
            low, high = wilson(int(top1.__eq__(y_test).sum()), len(y_test))
            versus = ""
            if label != "no":
                drop = paired_drop(right[(per_tensor, "no")], right[(per_tensor, label)])
                versus = (f"{-drop['drop'] * 100 + 0.0:+.2f} pt [{-drop['ci95'][1] * 100 + 0.0:+.2f}, "
                          f"{-drop['ci95'][0] * 100 + 0.0:+.2f}] ({drop['lost']} lost, {drop['gained']} gained)")
            print(f"{'per tensor' if per_tensor else 'per channel':11s} {label:10s} "
                  f"{right[(per_tensor, label)].mean():7.2%} [{low:.2%}, {high:.2%}] "
                  f"{np.mean(top1 == keras.argmax(-1)):9.2%}  {versus}")

if __name__ == "__main__":
    main()
