"""The error catalogue, untrusted models, native crashes, lost work, concurrent commands."""
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.core.fsutil import is_temporary
from tests.conftest import copy_run

PROJECT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, code: int, text: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.stderr
    assert "Traceback" not in result.output


# -- error catalogue --------------------------------------------------------------------

def test_missing_model_file(tmp_path):
    one_error_line(invoke("import", tmp_path / "nope.keras", "--out", tmp_path / "r"), 4,
                   f"model file {tmp_path / 'nope.keras'} does not exist")


def test_corrupt_and_truncated_keras_and_h5(tmp_path, trained_run):
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes((trained_run.run_dir / "model.keras").read_bytes()[:5000])
    one_error_line(invoke("import", truncated, "--out", tmp_path / "a"), 4,
                   "is corrupt or truncated (not a valid .keras zip archive)")
    h5 = tmp_path / "broken.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    one_error_line(invoke("import", h5, "--out", tmp_path / "b"), 4, f"cannot load {h5}")


def test_corrupt_tflite_and_onnx_on_the_device_side(tmp_path, trained_run, capsys):
    from edge_runtime.cli import main as edge_main
    from pipeline.config.stages import ConvertOptions
    from pipeline.optimizing.convert import convert

    run_dir = copy_run(trained_run.run_dir, tmp_path)
    convert(run_dir, ConvertOptions(targets=["onnx"], int8_onnx=False))
    onnx = tmp_path / "cut.onnx"
    onnx.write_bytes((run_dir / "model_float32.onnx").read_bytes()[:3000])
    assert edge_main(["info", str(onnx)]) == 4
    assert "ONNX Runtime cannot load" in capsys.readouterr().err
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(os.urandom(2048))
    assert edge_main(["info", str(garbage)]) == 4
    assert "LiteRT cannot load" in capsys.readouterr().err


def test_class_count_mismatch(tmp_path, trained_run):
    np.savez(tmp_path / "three.npz", x_train=np.zeros((30, 28, 28, 1), np.uint8), y_train=np.arange(30) % 3,
             x_test=np.zeros((9, 28, 28, 1), np.uint8), y_test=np.arange(9) % 3)
    one_error_line(invoke("import", trained_run.run_dir / "model.keras", "--dataset",
                          f"npz:{tmp_path / 'three.npz'}", "--out", tmp_path / "r"), 4,
                   "has 10 outputs but the data set has 3 classes")


def test_run_directory_from_another_version(tmp_path, trained_run):
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(trained_run.run_dir, copy, ignore=shutil.ignore_patterns("*.lock"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["run_format"], manifest["pipeline_version"] = 99, "9.0.0"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    one_error_line(invoke("quantize", "--int8", "--run", copy), 7,
                   "was written by a newer pipeline (version 9.0.0, run format 99)")


def test_output_directory_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    one_error_line(invoke("train", "--epochs", "1", "--out", blocker / "run"), 7,
                   "cannot create run directory")


def test_no_run_yet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_error_line(invoke("quantize", "--int8"), 7, "no run found at runs/latest: run `pipeline train` first")


def test_full_disk_loses_nothing(tmp_path, trained_run):
    """With a 200 KB file-size limit (EFBIG, as on a full disk) pruning cannot save its model."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir, ignore=shutil.ignore_patterns("*.lock", "model_pruned*"))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "prune", "--unstructured", "--fine-tune-epochs", "1",
                           "--run", str(run_dir)], capture_output=True, text=True, preexec_fn=limit,
                          cwd=PROJECT, timeout=600)
    assert done.returncode == 7, done.stderr[-2000:]
    assert "File too large" in done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr
    assert not (run_dir / "model_pruned.keras").exists()
    assert not [p for p in run_dir.rglob("*") if is_temporary(p.name)]  # the failed write cleaned up
    for name, data in before.items():  # nothing already written was touched
        assert (run_dir / name).read_bytes() == data, name


# -- untrusted models -------------------------------------------------------------------

def test_lambda_layers_are_refused_unless_unsafe(tmp_path):
    import keras

    marker = tmp_path / "code-ran"
    code = f"lambda x: (open({str(marker)!r}, 'w').write('ran'), x)[1]"
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(eval(code)),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.save(tmp_path / "evil.keras")
    marker.unlink()  # building the model ran it once; from here on it must not run
    one_error_line(invoke("import", tmp_path / "evil.keras", "--out", tmp_path / "r"), 4,
                   "contains code (for example a Lambda layer) that only runs if you trust the file: "
                   "pass --unsafe")
    assert not marker.exists()
    result = invoke("import", tmp_path / "evil.keras", "--unsafe", "--out", tmp_path / "r2")
    assert result.exit_code == 0, result.output
    assert marker.exists()  # with --unsafe the user asked for it


# -- native crashes ---------------------------------------------------------------------

@pytest.mark.slow
def test_two_hundred_mutated_models_never_kill_the_process(trained_run, tmp_path):
    # 200 seeded cases here; `python benchmarks/fuzz_loaders.py --cases 1000` for more
    from pipeline.config.stages import ConvertOptions, QuantizeOptions
    from pipeline.optimizing.convert import convert
    from pipeline.optimizing.quantize import quantize

    run_dir = copy_run(trained_run.run_dir, tmp_path)
    quantize(run_dir, QuantizeOptions(modes=["int8"]))
    convert(run_dir, ConvertOptions(targets=["onnx"]))
    done = subprocess.run([sys.executable, str(PROJECT / "benchmarks" / "fuzz_loaders.py"),
                           "--tflite", str(run_dir / "model_int8.tflite"),
                           "--onnx", str(run_dir / "model_int8.onnx"),
                           "--cases", "200", "--seed", "0", "--json"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert sum(result["before_bare_runtime"].values()) == 200
    assert result["after_edge_runtime_with_sidecar"] == {"refused": 200}
    assert sum(result["after_edge_runtime_isolated"].values()) == 200
    assert result["native_crashes_after"] == 0
    # silently-running corrupt files are exactly what the sidecar check is for
    assert result["before_bare_runtime"].get("ran", 0) > 0


def test_isolate_turns_a_native_crash_into_an_error(tmp_path, monkeypatch):
    """A child that dies by a signal is reported as an ArtifactError in the parent."""
    from edge_runtime import ArtifactError
    from edge_runtime import runner as runner_module

    model = tmp_path / "m.tflite"
    model.write_bytes(b"\0" * 64)
    real_load = runner_module.load

    def crashing_load(path, **kwargs):  # stands in for a runtime that segfaults on this file
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGSEGV)
        return real_load(path, **kwargs)

    parent = os.getpid()
    monkeypatch.setattr(runner_module, "load", crashing_load)
    with pytest.raises(ArtifactError, match="the runtime crashed loading it \\(SIGSEGV\\)"):
        runner_module.probe_in_child(model)


# -- no lost work -----------------------------------------------------------------------

