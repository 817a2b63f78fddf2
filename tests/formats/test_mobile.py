"""What a phone app reads from our artifacts: the serving_default signature, TFLite Metadata
(normalization, labels, image size) that agrees with the sidecar, GPU-delegate compatibility,
and ONNX Runtime Mobile's .ort files that give the .onnx answers."""
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SUPPORT_PYTHON = ROOT / ".venv-tflite-support" / "bin" / "python"
MODES = ["float16", "dynamic", "int8", "int16x8"]


@pytest.fixture(scope="module")
def mobile_run(trained_run, tmp_path_factory):
    from pipeline.config.stages import ConvertOptions, QuantizeOptions
    from pipeline.optimizing.convert import convert
    from pipeline.optimizing.quantize import quantize

    run_dir = tmp_path_factory.mktemp("mobile") / "run"
    shutil.copytree(trained_run.run_dir, run_dir, ignore=shutil.ignore_patterns(".lock"))
    quantize(run_dir, QuantizeOptions(modes=MODES, recover=False))
    convert(run_dir, ConvertOptions(targets=["tflite", "onnx", "ort"], recover=False))
    return run_dir


def _tflite(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("model_*.tflite"))


def test_every_tflite_artifact_has_a_signature_whose_runner_gives_the_plain_invokes_outputs(mobile_run, digits):
    from ai_edge_litert.interpreter import Interpreter

    from edge_runtime import load
    from edge_runtime.runner import quantize

    x_test = digits.split("test")[0][:20]
    paths = _tflite(mobile_run)
    assert [p.name for p in paths] == sorted(f"model_{m}.tflite" for m in ["float32", *MODES])
    for path in paths:
        plain_interpreter = Interpreter(model_path=str(path))
        assert plain_interpreter.get_signature_list() == {
            "serving_default": {"inputs": ["input"], "outputs": ["output_0"]}}, path.name
        runner = load(path)  # edge-runtime addresses the signature's tensors
        assert runner.signature["inputs"] == ["input"] and runner.signature["outputs"] == ["output_0"]
        signature = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
        for sample in quantize(x_test, runner.input):
            through_signature = signature(input=sample[None])["output_0"].copy()
            assert np.array_equal(through_signature, runner.invoke_quantized(sample[None])), path.name


def test_the_metadata_says_what_the_sidecar_says_as_an_app_reads_it(mobile_run, digits):
    """Every field an Android or iOS app reads: the normalization that turns raw pixels into
    the model's input (checked by applying it), the image size and color space, the labels
    file packed in the model and named as the output's TENSOR_AXIS_LABELS, the input
    quantization of integer models, and the sidecar's hash over the final bytes."""
    from edge_runtime.artifact import read_sidecar, sha256_file
    from edge_runtime.preprocessing import apply_preprocessing
    from pipeline.formats import tflite_meta

    spec = json.loads((mobile_run / "train.json").read_text())["data"]["preprocessing"]
    raw = digits.x_test[:5].astype(np.float32)
    for path in _tflite(mobile_run):
        content, sidecar = path.read_bytes(), read_sidecar(path)
        assert sidecar["sha256"] == sha256_file(path) and sidecar["size_bytes"] == len(content)
        metadata = tflite_meta.read_metadata(content)
        assert metadata["name"] == f"mnist_cnn_{sidecar['mode']}" and metadata["version"] == sidecar["pipeline_version"]
        assert metadata["min_parser_version"] == "1.0.0"
        (source,), (output,) = metadata["inputs"], metadata["outputs"]
        assert source["image"] == {"color_space": "GRAYSCALE", "width": spec["input_shape"][1],
                                   "height": spec["input_shape"][0]}
        mean, std = (np.asarray(source["normalization"][k], dtype=np.float32) for k in ("mean", "std"))
        np.testing.assert_allclose((raw - mean) / std, apply_preprocessing(raw, spec), rtol=1e-6, atol=1e-7)
        assert output["associated_files"] == [{"name": "labels.txt", "type": tflite_meta.TENSOR_AXIS_LABELS}]
        labels = tflite_meta.packed_files(content)["labels.txt"].decode().splitlines()
        assert labels == sidecar["class_names"] == spec["class_names"]
        quantization = sidecar["inputs"][0]
        if sidecar["mode"] in ("int8", "int16x8"):  # the app quantizes with the tensor's own parameters
            described = f"scale {quantization['scale']:.9g} and zero point {quantization['zero_point']}"
            assert described in source["description"]
        else:
            assert "quantized" not in source["description"]


def test_metadata_displayer_of_tflite_support_reads_every_artifact(mobile_run):
    """The independent reader: tflite-support's MetadataDisplayer, in its own environment
    (scripts/tflite-support-venv; it cannot live beside TensorFlow 2.21)."""
    if not SUPPORT_PYTHON.exists():
        pytest.skip("no .venv-tflite-support (build it with scripts/tflite-support-venv)")
    script = (
        "import json, sys\n"
        "from tflite_support import metadata\n"
        "out = {}\n"
        "for path in sys.argv[1:]:\n"
        "    shown = metadata.MetadataDisplayer.with_model_file(path)\n"
        "    data = json.loads(shown.get_metadata_json())\n"
        "    files = shown.get_packed_associated_file_list()\n"
        "    labels = shown.get_associated_file_buffer('labels.txt').decode().splitlines()\n"
        "    tensor = data['subgraph_metadata'][0]['input_tensor_metadata'][0]\n"
        "    out[path] = {'name': data['name'], 'files': files, 'labels': labels,\n"
        "                 'normalization': tensor['process_units'][0]['options'],\n"
        "                 'output_files':\n"
        "                     data['subgraph_metadata'][0]['output_tensor_metadata'][0]['associated_files']}\n"
        "print(json.dumps(out))\n")
    paths = [str(p) for p in _tflite(mobile_run)]
    done = subprocess.run([str(SUPPORT_PYTHON), "-c", script, *paths], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    spec = json.loads((mobile_run / "train.json").read_text())["data"]["preprocessing"]
    for path in paths:
        assert shown[path]["files"] == ["labels.txt"] and shown[path]["labels"] == spec["class_names"]
        assert shown[path]["normalization"] == {"mean": [0.0], "std": [pytest.approx(1 / spec["scale"], rel=1e-6)]}
        assert shown[path]["output_files"][0]["type"] == "TENSOR_AXIS_LABELS"


def test_metadata_and_signature_bytes_are_deterministic_and_replace_what_was_there(mobile_run):
    from pipeline.formats import tflite_meta

    path = mobile_run / "model_int8.tflite"
    content = path.read_bytes()
    fields = {"name": "x", "description": "d", "version": "1", "author": "", "license": "",
              "input": {"name": "input", "image": False, "color_space": "GRAYSCALE", "height": 0, "width": 0,
                        "mean": None, "std": None, "quantization": None, "description": "raw"},
              "output": {"name": "out", "description": "o"}, "labels": ["a", "b"]}
    once = tflite_meta.with_metadata(content, fields)
    assert tflite_meta.with_metadata(content, fields) == once  # same bytes, another call
    assert tflite_meta.read_metadata(once)["name"] == "x"  # replaced, not a second entry
    assert tflite_meta.packed_files(once) == {"labels.txt": b"a\nb\n"}
    bare = tflite_meta.without_metadata(once)
    assert tflite_meta.read_metadata(bare) is None and tflite_meta.packed_files(bare) == {}
    assert tflite_meta.signatures(bare) == tflite_meta.signatures(content)


def test_the_c_array_leaves_metadata_out_unless_asked_and_tflm_runs_both(mobile_run, tmp_path):
    from pipeline.formats.c_array import export_c_array
    from pipeline.formats.micro import run_micro, unavailable

    lean = export_c_array(mobile_run, "model_int8.tflite", tmp_path / "lean")
    full = export_c_array(mobile_run, "model_int8.tflite", tmp_path / "full", metadata=True)
    size = (mobile_run / "model_int8.tflite").stat().st_size
    assert full["length"] == size and full["metadata_bytes_left_out"] == 0
    assert lean["length"] + lean["metadata_bytes_left_out"] == size and lean["metadata_bytes_left_out"] > 0
    if unavailable():
        pytest.skip(unavailable())
    from pipeline.formats import tflite_meta

    stripped = tmp_path / "stripped.tflite"
    stripped.write_bytes(tflite_meta.without_metadata((mobile_run / "model_int8.tflite").read_bytes()))
    assert stripped.stat().st_size == lean["length"]
    assert run_micro(stripped).arena_bytes == lean["arena_bytes"] == full["arena_bytes"]


def test_verify_records_gpu_delegate_compatibility_and_signature_parity(mobile_run):
    from pipeline.checking.verify import verify
    from pipeline.config.gates import VerifyOptions
    from pipeline.running.report import gpu_summary

    report = verify(mobile_run, VerifyOptions(explain=False))
    rows = {r["artifact"]: r for r in report["artifacts"]}
    for name in ("model_float32.tflite", "model_float16.tflite"):  # the seed CNN: every op on the GPU
        assert rows[name]["gpu_delegate"]["compatible"] is True and rows[name]["gpu_delegate"]["fallback_ops"] == []
        assert gpu_summary(rows[name]["gpu_delegate"]) == "yes"
    assert "gpu_delegate" not in rows["model_int8.tflite"]  # integer models do not go to the GPU delegate
    for name, row in rows.items():
        if name.endswith(".tflite"):
            assert row["signature"]["max_abs_difference"] == 0.0 and row["gates"]["signature"]["passed"], name
    for name in ("model_float32.ort", "model_int8.ort", "model_int8_tflite.ort"):  # .ort: the .onnx answers
        gate = rows[name]["gates"]["onnx_parity"]
        if name == "model_float32.ort":  # the same float graph: equal to rounding
            assert gate["passed"] and gate["op"] == "<=" and gate["value"] <= 1e-6, (name, gate)
        else:  # integer kernels chosen for arm may saturate on an x86 without VNNI: top-1 agreement
            assert gate["passed"] and gate["op"] == ">=" and gate["value"] >= 0.99, (name, gate)
        assert rows[name]["passed"], (name, rows[name]["gates"])
    assert report["passed"]


def test_the_gpu_report_names_the_ops_that_fall_back_to_the_cpu():
    """The analyzer's text for a graph with an op the GPU delegate lacks (its own wording)."""
    from pipeline.checking.gpu_delegate import parse_report, summary

    text = ("Subgraph#0 main(T#0) -> [T#3]\n"
            "  Op#0 CONV_2D(T#0, T#1, T#2) -> [T#4]\n"
            "  Op#1 CUMSUM(T#4, T#5) -> [T#3]\n"
            "GPU COMPATIBILITY WARNING: Not supported op CUMSUM\n"
            "\nGPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 1 "
            "on TFLite runtime version 2.21.0\n")
    record = parse_report(text, "2.21.0")
    assert record["compatible"] is False
    assert record["fallback_ops"] == [{"node": 1, "op": "CUMSUM", "reason": "Not supported op CUMSUM"}]
    assert summary(record) == "no: CUMSUM on CPU"
    with pytest.raises(ValueError):
        parse_report("nothing the analyzer would say", "2.21.0")
    assert summary({"compatible": "yes", "fallback_ops": None}) == "not checked"  # an edited verify.json


def test_ort_artifacts_are_made_for_the_run_and_benchmarked(mobile_run):
    from pipeline.formats.kinds import run_artifacts

    convert = json.loads((mobile_run / "convert.json").read_text())
    for name in ("model_float32.ort", "model_int8.ort", "model_int8_tflite.ort"):
        assert convert["artifacts"][name]["onnx"] == name.replace(".ort", ".onnx")
        assert (mobile_run / name).read_bytes()[4:8] == b"ORTM"  # ONNX Runtime's flatbuffer identifier
    assert {p.name for p in run_artifacts(mobile_run)} >= {"model_float32.ort", "model_int8.ort"}


def test_ort_without_onnx_artifacts_is_one_line(trained_run, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir, ignore=shutil.ignore_patterns(".lock", "*.onnx", "*.onnx.json"))
    result = CliRunner().invoke(app, ["convert", "--run", str(run_dir), "--to", "ort"])
    assert result.exit_code != 0 and "no ONNX artifacts to convert to .ort" in result.output
    assert not list(run_dir.glob("*.ort"))
