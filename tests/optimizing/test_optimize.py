"""Quantization, conversion and pruning on the seed CNN trained on digits (session fixture)."""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_runtime import load
from edge_runtime.artifact import read_sidecar, sha256_file
from pipeline.cli import app
from pipeline.core.errors import ConversionError
from tests.conftest import copy_run

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def converted(trained_run, tmp_path_factory):
    """Every quantization mode and conversion target, written into a copy of the trained run."""
    run_dir = copy_run(trained_run.run_dir, tmp_path_factory.mktemp("converted"))
    result = invoke("quantize", "--int8", "--float16", "--dynamic", "--int16x8", "--run", run_dir)
    assert result.exit_code == 0, result.output
    result = invoke("convert", "--run", run_dir)
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.fixture(scope="module")
def keras_reference(trained_run):
    import keras

    from pipeline.data.context import RunContext

    context = RunContext(trained_run.run_dir)
    x_test, y_test = context.dataset.split("test")
    model = keras.models.load_model(trained_run.run_dir / "model.keras")
    return x_test, y_test, model.predict(x_test, verbose=0)


def _accuracy(probabilities, labels):
    return float(np.mean(probabilities.argmax(1) == labels))


def test_int8_is_small_accurate_and_agrees(converted, keras_reference):
    x_test, y_test, expected = keras_reference
    int8 = load(converted / "model_int8.tflite")
    assert int8.input.dtype == "int8" and int8.outputs[0].dtype == "int8"
    assert int8.input.shape == (1, 28, 28, 1)  # batch-1 signature by default
    predicted = int8.predict(x_test)
    # measured: drop 0.0, 360/360 top-1 agreement; bounds: 4 and 5 of 360 images
    assert _accuracy(expected, y_test) - _accuracy(predicted, y_test) <= 4 / 360
    assert np.mean(predicted.argmax(1) == expected.argmax(1)) >= 1 - 5 / 360
    size_ratio = (converted / "model_int8.tflite").stat().st_size / (
        converted / "model_float32.tflite").stat().st_size
    assert size_ratio <= 0.35


def test_float_artifacts_match_keras(converted, keras_reference):
    x_test, _, expected = keras_reference
    for name in ("model_float32.tflite", "model_float32.onnx"):
        np.testing.assert_allclose(load(converted / name).predict(x_test), expected, atol=1e-5,
                                   err_msg=name)
    np.testing.assert_allclose(load(converted / "model_float16.tflite").predict(x_test), expected,
                               atol=1e-2)


@pytest.mark.parametrize("name", ["model_dynamic.tflite", "model_int16x8.tflite", "model_int8.onnx"])
def test_other_quantized_artifacts_keep_accuracy(converted, keras_reference, name):
    x_test, y_test, expected = keras_reference
    predicted = load(converted / name).predict(x_test)
    # measured for all three: drop 0.0 and 360/360 agreement; bounds: 4 and 7 of 360 images
    assert _accuracy(expected, y_test) - _accuracy(predicted, y_test) <= 4 / 360, name
    assert np.mean(predicted.argmax(1) == expected.argmax(1)) >= 1 - 7 / 360, name


def test_int8_onnx_from_tflite_tracks_litert(converted, keras_reference):
    """Same int8 feed, same integer graph: top-1 identical, outputs within a few int8 steps.

    Not bit for bit on this model: ONNX Runtime computes the final Softmax in float between
    Dequantize/Quantize nodes where LiteRT uses its int8 kernel (measured: 96.7% of the
    digits test samples identical, at most 8 steps apart on the others).
    """
    from edge_runtime.runner import quantize

    x_test, _, _ = keras_reference
    tflite = load(converted / "model_int8.tflite")
    onnx = load(converted / "model_int8_tflite.onnx")
    assert onnx.input.dtype == "int8" and onnx.input.scale == tflite.input.scale
    litert_out, onnx_out = [], []
    for sample in x_test:
        feed = quantize(sample[None], tflite.input)
        litert_out.append(tflite.invoke_quantized(feed))
        onnx_out.append(onnx.invoke_quantized(feed))
    litert_out, onnx_out = np.concatenate(litert_out).astype(int), np.concatenate(onnx_out).astype(int)
    assert np.array_equal(litert_out.argmax(1), onnx_out.argmax(1))
    assert np.abs(litert_out - onnx_out).max() <= 8
    assert np.mean(np.all(litert_out == onnx_out, axis=1)) >= 0.9


def test_sidecars_describe_each_artifact(converted):
    for artifact in converted.glob("model_*.*"):
        if artifact.suffix not in (".tflite", ".onnx"):
            continue
        sidecar = read_sidecar(artifact)
        assert sidecar["sha256"] == sha256_file(artifact), artifact.name
        assert sidecar["preprocessing"]["scale"] == pytest.approx(1 / 255)
        assert sidecar["class_names"] == [str(i) for i in range(10)]
        assert sidecar["inputs"][0]["shape"][1:] == [28, 28, 1]
        assert sidecar["source_model"]["path"] == "model.keras"
    int8 = read_sidecar(converted / "model_int8.tflite")
    assert int8["calibration"]["count"] == 300 and len(int8["calibration"]["indices"]) == 300
    assert int8["inputs"][0]["dtype"] == "int8" and int8["inputs"][0]["scale"] > 0
    manifest = json.loads((converted / "manifest.json").read_text())
    assert manifest["artifacts"]["model_int8.tflite"] == int8["sha256"]


def test_onnx_metadata_props(converted):
    import onnx

    props = {p.key: p.value for p in onnx.load(converted / "model_int8.onnx").metadata_props}
    assert json.loads(props["pipeline.preprocessing"])["input_shape"] == [28, 28, 1]
    assert len(json.loads(props["pipeline.calibration_indices"])) == 300


def test_raw_inputs_are_preprocessed_from_the_sidecar(converted, trained_run):
    from pipeline.data.context import RunContext

    dataset = RunContext(trained_run.run_dir).dataset
    runner = load(converted / "model_int8.tflite")
    raw = dataset.x_test[:20]  # uint8 pixels, as a camera would give them
    np.testing.assert_array_equal(runner.predict(raw, raw=True),
                                  runner.predict(dataset.split("test")[0][:20]))


def test_float_io_dynamic_batch_and_compat(trained_run, tmp_path, keras_reference):
    from pipeline.config.stages import QuantizeOptions
    from pipeline.optimizing.quantize import quantize

    x_test, _, expected = keras_reference
    run_dir = copy_run(trained_run.run_dir, tmp_path)
    quantize(run_dir, QuantizeOptions(modes=["int8"], float_io=True, dynamic_batch=True, calibration_samples=100))
    runner = load(run_dir / "model_int8.tflite")
    assert runner.input.dtype == "float32" and runner.dynamic_batch
    # float-I/O int8 on 64 images: at most 4 may disagree (the int8 model above: none of 360)
    assert np.mean(runner.predict(x_test[:64]).argmax(1) == expected[:64].argmax(1)) >= 60 / 64
    quantize(run_dir, QuantizeOptions(modes=["dynamic"], compat="tflite-runtime"))
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(run_dir / "model_dynamic.tflite"))
    int8_weights = [t for t in interpreter.get_tensor_details() if t["dtype"] == np.int8]
    assert int8_weights and all(len(t["quantization_parameters"]["scales"]) == 1
                                for t in int8_weights if len(t["shape"]) == 2)


def test_quantization_without_calibration_data_fails_clearly(trained_run):
    result = invoke("quantize", "--int8", "--calibration-samples", "0", "--run", trained_run.run_dir)
    assert result.exit_code == 5
    assert "int8 quantization needs calibration samples" in result.stderr


def test_flex_only_ops_are_named(tmp_path):
    import keras
    import tensorflow as tf

    from pipeline.formats.tflite import to_tflite

    class Erfinv(keras.layers.Layer):
        def call(self, x):
            return tf.math.erfinv(x)

    model = keras.Sequential([keras.Input((4,)), Erfinv(), keras.layers.Dense(2)])
    with pytest.raises(ConversionError, match=r"needs ops outside TFLite's builtins \(Erfinv\)"):
        to_tflite(model, "float32")


def test_mixed_precision_model_converts(tmp_path):
    import keras

    import models
    from pipeline.core.modelio import float32_copy, load_model
    from pipeline.formats.tflite import to_tflite

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = models.build_model("mnist_cnn", (28, 28, 1), 10)
        mixed.save(tmp_path / "mixed.keras")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model = float32_copy(load_model(tmp_path / "mixed.keras"))
    assert model.layers[0].compute_dtype == "float32"
    path = tmp_path / "mixed.tflite"
    path.write_bytes(to_tflite(model, "float32"))
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(load(path).predict(x), model.predict(x, verbose=0), atol=1e-5)
    # and the mixed model's own float16 answers are close to the float32 twin's
    np.testing.assert_allclose(mixed.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-2)


def test_same_model_gives_byte_identical_tflite(trained_run):
    from pipeline.data.context import RunContext
    from pipeline.formats.tflite import to_tflite

    context = RunContext(trained_run.run_dir)
    model = context.load_model()
    _, samples = context.calibration(50)
    assert to_tflite(model, "int8", calibration=samples) == to_tflite(model, "int8", calibration=samples)


def test_saved_model_and_keras2_h5_are_imported(trained_run, tmp_path):
    """Bring your own model: a SavedModel directory and a legacy .h5 go through every stage."""
    import keras

    from pipeline.checking.verify import verify
    from pipeline.config.gates import VerifyOptions

    model = keras.models.load_model(trained_run.run_dir / "model.keras")
    model.export(tmp_path / "saved", format="tf_saved_model")
    model.save(tmp_path / "legacy.h5")
    from pipeline.core.modelio import trusting_model_code

    # A SavedModel's graph is code: without --unsafe it is refused and nothing is written.
    refused = invoke("import", tmp_path / "saved", "--out", tmp_path / "run-refused")
    assert refused.exit_code == 4 and "pass --unsafe if you trust it" in refused.stderr
    assert not (tmp_path / "run-refused").exists()
    for source, trust in (("saved", ["--unsafe"]), ("legacy.h5", [])):
        result = invoke("import", tmp_path / source, "--out", tmp_path / f"run-{source}", *trust)
        assert result.exit_code == 0, result.output
        run_dir = tmp_path / f"run-{source}"
        imported = json.loads((run_dir / "train.json").read_text())
        assert imported["test_accuracy"] == pytest.approx(trained_run.metrics["test_accuracy"], abs=1e-6)
        for args in (["quantize", "--int8"], ["convert", "--to", "tflite"]):
            result = invoke(*args, "--run", run_dir, *trust)  # each command says it again
            assert result.exit_code == 0, result.output
        with trusting_model_code(bool(trust)):
            assert verify(run_dir, VerifyOptions())["passed"]
