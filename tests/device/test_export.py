"""The loop to the board: the exported header compiles as C and as C++ and its raw-to-input
function computes what the device runtime feeds the model; ``--samples`` writes the raw test
samples on which the device's ``edge-runtime`` answers as this workstation did; the artifact is
found in a variant by its name, and by default is the report's pick for a board."""
import json
import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app

GCC, GXX = shutil.which("gcc"), shutil.which("g++")
runner = CliRunner()


@pytest.fixture(scope="module")
def int8_run(trained_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(trained_run.run_dir, run_dir, ignore=shutil.ignore_patterns("*.lock"))
    result = runner.invoke(app, ["quantize", "--int8", "--no-recover", "--run", str(run_dir)])
    assert result.exit_code == 0, result.output
    return run_dir


_RAW_TO_INPUT = r"""
#include <stdio.h>
#include "model_data.h"
int main(void) {
  int raw;
  while (scanf("%d", &raw) == 1) printf("%d\n", g_model_data_input_from_raw((float)raw, 0));
  printf("%d %d %d %d\n", kInputDims, kInputBytes, kNumOps, (int)kTensorArenaSize);
  return 0;
}
"""


@pytest.mark.skipif(GCC is None or GXX is None, reason="no gcc/g++ on this machine")
def test_the_header_compiles_as_c_and_cpp_and_quantizes_raw_input_as_the_device_does(int8_run, tmp_path):
    from edge_runtime import load
    from edge_runtime.preprocessing import apply_preprocessing
    from edge_runtime.runner import quantize

    result = runner.invoke(app, ["export", "--run", str(int8_run), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    header = tmp_path / "model_data.h"
    for compiler, language in ((GCC, ["-x", "c", "-std=c99"]), (GXX, ["-x", "c++", "-std=c++17"])):
        subprocess.run([compiler, *language, "-Wall", "-Wextra", "-Werror", "-fsyntax-only", str(header)],
                       check=True, timeout=120)
    facts = json.loads((tmp_path / "model_data.json").read_text())
    assert facts["ops"] == ["CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "RESHAPE", "SOFTMAX"]
    text = header.read_text()
    assert "(resolver).AddConv2D(); (resolver).AddFullyConnected();" in text and "kInputShape" in text
    (tmp_path / "raw.c").write_text(_RAW_TO_INPUT)
    binary = tmp_path / "raw"
    subprocess.run([GCC, "-std=c99", "-Wall", "-Werror", "-o", str(binary), str(tmp_path / "raw.c")],
                   check=True, cwd=tmp_path, timeout=120)
    values = np.arange(256)  # every raw uint8 pixel value
    done = subprocess.run([str(binary)], input=" ".join(map(str, values)), capture_output=True, text=True,
                          check=True, timeout=60)
    *quantized, last = done.stdout.splitlines()
    model = load(int8_run / "model_int8.tflite")
    expected = quantize(apply_preprocessing(values.astype(np.uint8), model.sidecar["preprocessing"]), model.input)
    assert [int(q) for q in quantized] == expected.tolist()
    assert last.split() == ["4", "784", "5", str(facts["arena_bytes"])]
    assert (tmp_path / "model_example.cc").read_text().count("G_MODEL_DATA_ADD_OPS(resolver);") == 1


def test_samples_answer_on_the_device_as_here(int8_run, tmp_path, capsys):
    from edge_runtime.cli import main as device_main

    result = runner.invoke(app, ["export", "--run", str(int8_run), "--no-c-array", "--samples", "25",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "edge-runtime predict model_int8.tflite samples.npz --raw" in result.output
    record = json.loads((tmp_path / "samples.json").read_text())
    with np.load(tmp_path / "samples.npz") as archive:
        assert archive["x"].dtype == np.uint8 and archive["x"].shape == (25, 28, 28, 1)  # raw, as stored
        labels = archive["y"]
    shutil.copy(int8_run / "model_int8.tflite", tmp_path)
    shutil.copy(int8_run / "model_int8.tflite.json", tmp_path)
    capsys.readouterr()
    assert device_main([
        "predict", str(tmp_path / "model_int8.tflite"), str(tmp_path / "samples.npz"), "--raw", "--json"]) == 0
    answered = json.loads(capsys.readouterr().out)
    assert answered["top1"] == record["top1"] and len(record["top1"]) == 25
    assert record["accuracy"] == pytest.approx(float(np.mean(np.array(record["top1"]) == labels)))


def test_the_artifact_is_found_in_its_variant_and_defaults_to_the_reports_pick(int8_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(int8_run, run_dir, ignore=shutil.ignore_patterns("*.lock"))
    variant = run_dir / "variants" / "pruned-50"
    variant.mkdir(parents=True)
    for name in ("model_int8.tflite", "model_int8.tflite.json"):
        shutil.copy(run_dir / name, variant / name.replace("model_", "model_pruned_"))
    found = runner.invoke(app, ["export", "--run", str(run_dir), "--artifact", "model_pruned_int8.tflite",
                                "--no-c-array", "--samples", "1", "--out", str(tmp_path / "a")])
    assert found.exit_code == 0, found.output
    assert found.output.startswith("variants/pruned-50/model_pruned_int8.tflite:")
    board = {"board": {"artifact": "variants/pruned-50/model_pruned_int8.tflite"}}
    (run_dir / "report.json").write_text(json.dumps(board))
    picked = runner.invoke(app, ["export", "--run", str(run_dir), "--no-c-array", "--samples", "1",
                                 "--out", str(tmp_path / "b")])
    assert picked.exit_code == 0 and "the report's pick for a board" in picked.output
    assert picked.output.startswith("variants/pruned-50/model_pruned_int8.tflite:")
    # report.json is a file like any other: a pick outside the run is not followed
    (run_dir / "report.json").write_text(json.dumps({"board": {"artifact": "../../../../etc/passwd"}}))
    planted = runner.invoke(app, ["export", "--run", str(run_dir), "--no-c-array", "--samples", "1",
                                  "--out", str(tmp_path / "c")])
    assert planted.exit_code == 0 and planted.output.startswith("model_int8.tflite:")
    nothing = runner.invoke(app, ["export", "--run", str(run_dir), "--no-c-array"])
    assert nothing.exit_code == 2
    assert nothing.stderr.strip() == "error: choose what to export: --c-array, --samples N or both"
    missing = runner.invoke(app, ["export", "--run", str(run_dir), "--artifact", "model_int4.tflite"])
    assert missing.exit_code == 2 and "not found in" in missing.stderr and "or its variants" in missing.stderr
