"""The runs the hostile cases plant things in: each case copies one before it plants."""
import shutil

import pytest

from tests.hostile.helpers import invoke


@pytest.fixture
def user_files(tmp_path):
    """A folder of the user's own files that a planted link points into."""
    folder = tmp_path / "users-own"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "sizes.png").write_bytes(b"\x89PNG my own picture")
    return folder


@pytest.fixture
def run_copy(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir, ignore=shutil.ignore_patterns("*.lock"))
    return run_dir


@pytest.fixture(scope="package")
def quantized_run(trained_run, tmp_path_factory):
    """One int8 run shared by the read-mostly cases below (each copies it before planting)."""
    run_dir = tmp_path_factory.mktemp("quantized") / "run"
    shutil.copytree(trained_run.run_dir, run_dir, ignore=shutil.ignore_patterns("*.lock"))
    assert invoke("quantize", "--int8", "--no-recover", "--run", run_dir).exit_code == 0
    return run_dir


@pytest.fixture
def int8_copy(quantized_run, tmp_path):
    run_dir = tmp_path / "int8"
    shutil.copytree(quantized_run, run_dir, ignore=shutil.ignore_patterns("*.lock"))
    return run_dir


