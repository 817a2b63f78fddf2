"""Hostile round three: thresholds that are not numbers a gate can use (refused before any
work, in the CLI and the config alike), and the device runtime's inputs."""
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from tests.hostile.helpers import invoke, one_error_line, snapshot


@pytest.mark.parametrize("gate, message", [
    ("quantized.metric_drop=nan", "gate quantized.metric_drop must be a finite number ≥ 0, got nan"),
    ("quantized.metric_drop=inf", "gate quantized.metric_drop must be a finite number ≥ 0, got inf"),
    ("quantized.metric_drop=-0.01", "gate quantized.metric_drop must be a finite number ≥ 0, got -0.01"),
    ("quantized.top1_agreement=-1", "gate quantized.top1_agreement must be a finite number in [0, 1], got -1.0"),
    ("quantized.top1_agreement=1e309", "gate quantized.top1_agreement must be a finite number in [0, 1], got inf"),
    ("qat.fake_quant_agreement=1.5", "must be a finite number in [0, 1], got 1.5"),
    ("float32.max_abs_error=-1e-4", "gate float32.max_abs_error must be a finite number ≥ 0"),
    ("float16.sqnr_db=nan", "gate float16.sqnr_db must be a finite number, got nan"),
])
def test_a_gate_no_artifact_could_fail_or_pass_is_refused_before_any_work(run_copy, gate, message):
    before = snapshot(run_copy)
    line = one_error_line(invoke("verify", "--run", run_copy, "--gate", gate), 2)
    assert message in line
    assert snapshot(run_copy) == before  # refused before anything was verified or written


@pytest.mark.parametrize("table, message", [
    ("[verify.gates.quantized]\nmetric_drop = nan\n", "gate quantized.metric_drop must be a finite number ≥ 0"),
    ("[verify.gates.quantized]\ntop1_agreement = inf\n", "must be a finite number in [0, 1], got inf"),
    ("[verify.gates.quantized]\ntop1_agreement = \"high\"\n",
     "verify.gates.quantized.top1_agreement: expected a number, got 'high'"),
    ("[verify.gates.quantized]\ntop1_agreement = true\n",
     "verify.gates.quantized.top1_agreement: expected a number, got True"),
    ("[verify.gates]\nquantized = 0.5\n", "verify.gates.quantized: expected a mapping, got 0.5"),
])
def test_a_config_with_an_unusable_gate_is_refused_and_writes_nothing(tmp_path, table, message):
    config = tmp_path / "pipeline.toml"
    config.write_text(table)
    out = tmp_path / "out"
    line = one_error_line(invoke("run", config, "--out", out), 2)
    assert message in line
    assert not (out / "config.json").exists()


# The device runtime validates what it is given, as the pipeline's loaders do: one line, exit 3
# for the user's input (4 for an artifact that is not what it says), before anything is run.

@pytest.fixture(scope="module")
def device_model(trained_run, tmp_path_factory):
    """An int8 TFLite artifact with its sidecar, in a folder of its own."""
    from pipeline.config.stages import QuantizeOptions
    from pipeline.optimizing.quantize import quantize

    run_dir = tmp_path_factory.mktemp("device") / "run"
    shutil.copytree(trained_run.run_dir, run_dir, ignore=shutil.ignore_patterns("*.lock"))
    quantize(run_dir, QuantizeOptions(modes=["int8"]))
    return run_dir / "model_int8.tflite"


def _edge(capsys, *args) -> tuple[int, str]:
    from edge_runtime.cli import main

    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return code, err[0]


def _npy_declaring(path, shape, dtype="<f4", body=b"\0" * 64):
    """An .npy whose header declares ``shape`` whatever the bytes after it hold."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": tuple(shape)}).encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + body)
    return path


def _input_shape(device_model):
    from edge_runtime import load

    return tuple(load(device_model).input.shape[1:])


@pytest.mark.parametrize("case, expect", [
    ("empty batch", "holds no samples"),
    ("strings", "holds <U3 values; samples are numbers"),
    ("0-d", "is a single number (0-d)"),
    ("NaN", "holds 1 NaN or inf values"),
    ("petabytes", "declares 4,000,000,000,000,000 bytes of float32[1000000000000000] , more than the"),
    ("declared beyond the file", "declares 4,000,000 bytes of float32[1000000] but holds"),
    ("pickled objects", "holds Python objects"),
    ("a directory", "is not a regular file"),
])
def test_predict_refuses_inputs_it_cannot_use_in_one_line(device_model, tmp_path, capsys, case, expect):
    shape = _input_shape(device_model)
    path = tmp_path / "inputs.npy"
    if case == "empty batch":
        np.save(path, np.zeros((0, *shape), np.float32))
    elif case == "strings":
        np.save(path, np.array(["abc"] * int(np.prod(shape))).reshape(1, *shape))
    elif case == "0-d":
        np.save(path, np.float32(3.0))
    elif case == "NaN":
        x = np.zeros((1, *shape), np.float32)
        x.flat[0] = np.nan
        np.save(path, x)
    elif case == "petabytes":
        _npy_declaring(path, (10 ** 15,))
    elif case == "declared beyond the file":
        _npy_declaring(path, (10 ** 6,))
    elif case == "pickled objects":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif case == "a directory":
        path.mkdir()
    code, line = _edge(capsys, "predict", device_model, path, *(["--raw"] if case == "strings" else []))
    assert code == 3 and expect.replace(" , ", ", ") in line, line


def test_inputs_from_a_fifo_are_refused_without_waiting(device_model, tmp_path):
    """A FIFO never written to: opening it would block for ever."""
    fifo = tmp_path / "inputs.npy"
    os.mkfifo(fifo)
    done = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "predict", str(device_model), str(fifo)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3 and done.stderr.strip() == f"error: {fifo} is not a regular file", done.stderr


@pytest.mark.parametrize("labels, expect", [
    (np.array(["cat"] * 4), "holds <U3 values that are not class indices"),
    (np.array([0, 1, np.nan, 2]), "holds float64 values that are not class indices"),
    (np.array([0.5, 1, 2, 3]), "holds float64 values that are not class indices"),
    (np.array([0, 1, 2, 10]), "holds the label 10; the model has 10 classes (0 to 9)"),
    (np.array([0, -1, 2, 3]), "holds the label -1; class indices start at 0"),
    (np.int64(3), "is a single number (0-d); labels are one per sample"),
])
def test_eval_refuses_labels_that_are_not_class_indices(device_model, tmp_path, capsys, labels, expect):
    """Before: string or NaN labels printed "accuracy 0.0000" and exited 0."""
    data = tmp_path / "eval.npz"
    np.savez(data, x=np.zeros((4, *_input_shape(device_model)), np.float32), y=labels)
    code, line = _edge(capsys, "eval", device_model, data)
    assert code == 3 and expect in line, line


def test_eval_refuses_a_0d_sample_array_and_a_member_declaring_petabytes(device_model, tmp_path, capsys):
    data = tmp_path / "eval.npz"
    np.savez(data, x=np.float32(1.0), y=np.array([1]))
    assert _edge(capsys, "eval", device_model, data) == (3, f"error: {data}:x is a single number (0-d); samples "
                                                            "are a batch with one row each")
    bomb = _npy_declaring(tmp_path / "x.npy", (10 ** 15, 8))
    with zipfile.ZipFile(data, "w") as archive:
        archive.write(bomb, "x.npy")
        archive.writestr("y.npy", b"")
    code, line = _edge(capsys, "eval", device_model, data)
    assert code == 3 and "x.npy declares 32,000,000,000,000,000 bytes" in line, line


def test_bench_refuses_a_sample_of_strings(device_model, tmp_path, capsys):
    sample = tmp_path / "sample.npy"
    np.save(sample, np.array(["x"] * int(np.prod(_input_shape(device_model)))).reshape(_input_shape(device_model)))
    code, line = _edge(capsys, "bench", device_model, "--sample", sample, "--runs", "1", "--min-seconds", "0")
    assert code == 3 and "holds <U1 values; samples are numbers" in line, line


def test_a_sidecar_naming_fewer_classes_than_the_model_has_is_not_the_models(device_model, tmp_path, capsys):
    model = tmp_path / device_model.name
    shutil.copy(device_model, model)
    sidecar = json.loads(device_model.with_name(device_model.name + ".json").read_text())
    sidecar["class_names"] = sidecar["class_names"][:3]
    model.with_name(model.name + ".json").write_text(json.dumps(sidecar))
    inputs = tmp_path / "x.npy"
    np.save(inputs, np.zeros((2, *_input_shape(device_model)), np.float32))
    code, line = _edge(capsys, "predict", model, inputs)
    assert code == 4 and "sidecar names 3 classes but the model has 10 outputs" in line, line


# Data folders: special files, one image that would set the decode size for all, class names
# that would not fit a labels file, and the decoded bytes bounded up front.

def _folder(root, classes=("cat", "dog"), per_class=6, size=(8, 8)):
    from PIL import Image

    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("L", size, color=(i * 40) % 256).save(root / name / f"{i:02d}.png")
    return root


def _load(root, **kwargs):
    from pipeline.data.loaders import load_dataset

    return load_dataset(f"folder:{root}", **kwargs)


def test_a_fifo_named_like_an_image_is_refused_before_it_is_opened(tmp_path):
    """Before: `pipeline train` waited for ever on it, printing nothing."""
    from pipeline.core.errors import DataError

    root = _folder(tmp_path / "data")
    os.mkfifo(root / "cat" / "00-fifo.png")
    with pytest.raises(DataError, match=r"00-fifo.png is not a regular file \(a FIFO"):
        _load(root)


def test_one_image_of_extreme_aspect_does_not_set_every_images_size(tmp_path):
    """Before: a 4096×4 PNG of a few hundred bytes placed first made a 156 KB folder a 513 MB
    cache, then a 17 GB allocation. The median shorter side of the folder decides now."""
    from PIL import Image

    root = _folder(tmp_path / "data")
    Image.new("L", (4096, 4)).save(root / "cat" / "00.png")
    dataset = _load(root)
    assert dataset.input_shape == (8, 8, 1)
    assert _load(root, image_size=12).input_shape == (12, 12, 1)  # an explicit size always wins


def test_decoded_bytes_are_bounded_before_anything_is_decoded(tmp_path, monkeypatch):
    from pipeline.core.errors import DataError
    from pipeline.data import loaders

    root = _folder(tmp_path / "data")
    monkeypatch.setattr(loaders, "MAX_DECODED_BYTES", 12 * 64 - 1)  # one byte short of 12 8×8 grey images
    with pytest.raises(DataError, match="12 images at 8×8 would decode to 768 bytes, more than 767"):
        _load(root)


@pytest.mark.parametrize("name", ["two\nlines", "tab\there", "bell\a"])
def test_a_class_name_that_would_break_the_labels_file_is_refused(tmp_path, name):
    """Before: a folder named with a newline packed a labels.txt with more lines than outputs."""
    from pipeline.core.errors import DataError

    root = _folder(tmp_path / "data", classes=("cat", name))
    with pytest.raises(DataError, match="a class name is printable text"):
        _load(root)


@pytest.mark.parametrize("recorded, kept", [
    ([0.02, 0.021, 0.019], True),
    ([1e300, 1e300, 1e300], False),  # before: taken, and the latency budget silently disappeared
    ([0.02, -1.0, 0.02], False), ([0.02, float("nan"), 0.02], False), ([0.02, True, 0.02], False),
    ("0.02", False),
])
def test_a_search_resumes_only_plausible_recorded_timings(recorded, kept):
    from pipeline.search.timer import _timings

    assert (_timings(recorded) == recorded) is kept


def test_an_ort_is_not_given_a_tensor_description_its_model_does_not_have(trained_run, tmp_path):
    """`convert --to ort` carries the ONNX sidecar's tensors over to the .ort (their
    quantization): an edited description is refused, not copied onto a model that takes other
    tensors (the ONNX file's own sha256 still matches, so only its tensors can tell)."""
    from tests.conftest import copy_run

    run_dir = copy_run(trained_run.run_dir, tmp_path)
    assert invoke("convert", "--to", "onnx", "--no-int8-onnx", "--run", run_dir).exit_code == 0
    sidecar = run_dir / "model_float32.onnx.json"
    edited = json.loads(sidecar.read_text())
    edited["inputs"][0]["shape"] = [1, 3, 3, 1]
    sidecar.write_text(json.dumps(edited))
    line = one_error_line(invoke("convert", "--to", "ort", "--run", run_dir), 5)
    assert "model_float32.onnx.json describes inputs that model_float32.onnx does not have" in line
    assert not (run_dir / "model_float32.ort").exists()


def test_packed_labels_are_read_back_before_an_artifact_is_written(device_model):
    """The last line of defence behind the class-name check: what labels.txt reads back as must
    be the class names, one per output."""
    from pipeline.core.errors import ConversionError
    from pipeline.formats.sidecar import _check_labels

    content = device_model.read_bytes()
    names = json.loads(device_model.with_name(device_model.name + ".json").read_text())["class_names"]
    _check_labels(content, names)  # the artifact as written: consistent
    for wrong in (names[:9], [*names[:9], "eight\nnine"], [*names[:9], "x"]):
        with pytest.raises(ConversionError, match="the artifact would say other classes than the model has"):
            _check_labels(content, wrong)


@pytest.fixture
def no_hang():
    """Fails a case that blocks (a FIFO opened for reading waits for a writer for ever)."""
    import signal

    def expired(*_):
        raise TimeoutError("blocked on a special file")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("case", ["import a model", "calibration data", "npz data set", "config file",
                                  "device model"])
def test_every_path_a_command_reads_is_refused_when_it_is_a_fifo(run_copy, tmp_path, capsys, no_hang, case):
    fifo = tmp_path / {"import a model": "model.keras", "calibration data": "samples.npy",
                       "npz data set": "data.npz", "config file": "pipeline.toml",
                       "device model": "model.tflite"}[case]
    os.mkfifo(fifo)
    if case == "device model":
        code, line = _edge(capsys, "info", fifo)
        assert code == 4 and "not a regular file" in line, line
        return
    args = {"import a model": ["import", fifo, "--dataset", "digits", "--out", tmp_path / "imported"],
            "calibration data": ["quantize", "--int8", "--calibration-data", fifo, "--run", run_copy],
            "npz data set": ["train", "--dataset", f"npz:{fifo}", "--epochs", "1", "--out", tmp_path / "trained"],
            "config file": ["run", fifo, "--out", tmp_path / "out"]}[case]
    result = invoke(*args)
    assert result.exit_code in (2, 3, 4), (result.exit_code, result.output)
    assert "is not a regular file" in one_error_line(result, result.exit_code)  # not "does not exist"


def test_a_fifo_planted_as_a_record_or_a_sidecar_is_one_line_not_a_wait(run_copy, device_model, tmp_path, capsys,
                                                                      no_hang):
    """A FIFO in place of a record `pipeline report` reads, or of an artifact's sidecar."""
    (run_copy / "verify.json").unlink(missing_ok=True)
    os.mkfifo(run_copy / "verify.json")
    line = one_error_line(invoke("report", "--run", run_copy), 7)
    assert "verify.json is unreadable" in line
    model = tmp_path / device_model.name
    shutil.copy(device_model, model)
    os.mkfifo(model.with_name(model.name + ".json"))
    code, line = _edge(capsys, "info", model)
    assert code == 4 and "is not a regular file" in line, line


@pytest.mark.parametrize("field, value, kept", [
    (None, None, True),
    ("val_accuracy", 7.0, False), ("val_log_loss", -0.3, False), ("p50_ms", 1e300, False),
    ("p50_ms", 0.0, False), ("size_kb", -30.0, False), ("feasible", 0.5, False),
])
def test_a_search_resumes_only_plausible_trial_measurements(tmp_path, field, value, kept):
    """A finished trial's measurement.json outside what a measurement can be is measured again,
    not taken (a planted p50 of 1e300 ms or an accuracy of 7 would decide the search)."""
    from pipeline.search.trials import _finished_measurement

    values = {"hidden": "32", "learning_rate": 0.001}
    metrics = {"val_accuracy": 0.9, "val_log_loss": 0.3, "p50_ms": 0.01, "size_kb": 30.0, "feasible": 1.0,
               "score": 0.9}
    if field:
        metrics[field] = value
    (tmp_path / "measurement.json").write_text(json.dumps({"hyperparameters": values, "metrics": metrics}))
    assert (_finished_measurement(tmp_path, values) is not None) is kept
