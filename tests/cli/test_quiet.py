"""What a user sees on stderr: only what the project itself prints.

TensorFlow, absl, the converters and LiteRT write to file descriptor 2 from native code; the
commands capture it and show it only with ``--verbose``. These tests run the real scripts in a
child process with the environment a user has (no ``TF_CPP_MIN_LOG_LEVEL``), so a native line
that escapes fails them.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent


def _user_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TF_CPP_", "EDGE_PIPELINE_VERBOSE", "PYTEST"))}
    env.pop("KERAS_BACKEND", None)
    return env


def _script(name: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / name), *map(str, args)], cwd=cwd, env=_user_env(),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def run_copy(trained_run, tmp_path_factory):
    work = tmp_path_factory.mktemp("quiet")
    shutil.copytree(trained_run.run_dir, work / "run", symlinks=True)
    return work


def test_successful_quantize_prints_nothing_on_stderr(run_copy):
    done = _script("pipeline", "quantize", "--int8", "--run", "run", cwd=run_copy)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert re.fullmatch(r"model_int8\.tflite +[0-9.]+ KiB  sha256 [0-9a-f]{12}\n"
                        r"int8 recovery: not needed \(validation agreement [0-9.]+%\), full int8 left alone\n",
                        done.stdout), done.stdout


def test_clean_error_is_exactly_one_line(run_copy):
    done = _script("pipeline", "quantize", "--int8", "--run", "no-such-run", cwd=run_copy)
    assert done.returncode == 7
    assert done.stderr == "error: run directory no-such-run does not exist\n"
    assert done.stdout == ""
    typo = _script("pipeline", "quantize", "--recvoer", cwd=run_copy)
    assert typo.returncode == 2
    assert typo.stderr == ("error: pipeline quantize: No such option: --recvoer (Possible options: "
                           "--no-recover, --recover)\n"), typo.stderr


def test_verbose_shows_what_was_captured(run_copy):
    """The captured native output is not lost: --verbose lets it through."""
    done = _script("pipeline", "--verbose", "quantize", "--int8", "--run", "run", cwd=run_copy)
    assert done.returncode == 0, done.stderr
    assert done.stderr != ""


def test_edge_runtime_predict_prints_only_its_result(run_copy, digits):
    test_run_model = run_copy / "run" / "model_int8.tflite"
    if not test_run_model.exists():
        assert _script("pipeline", "quantize", "--int8", "--run", "run", cwd=run_copy).returncode == 0
    np.save(run_copy / "x.npy", digits.x_test[:4])
    done = _script("edge-runtime", "predict", "--raw", test_run_model, "x.npy", cwd=run_copy)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()  # one line a sample: index, label, score; nothing else
    assert len(lines) == 4 and all(re.fullmatch(r"\d: \d \([0-9.e-]+\)", line) for line in lines), lines
