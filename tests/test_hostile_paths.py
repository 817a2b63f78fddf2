"""Hostile conditions, round two: writes that stay inside the directory a command owns, locks
that hold, inputs that are bounded, and files that are checked by type before use. Each case
asserts what a user sees (one ``error:`` line and a documented exit code, or the right result)
and what a user cares about (their own files unchanged, nothing already written lost)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()
PROJECT = Path(__file__).resolve().parents[1]
PIPELINE = [sys.executable, "-m", "pipeline.launcher"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, code, starts: str = "error: "):
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), result.stderr
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


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


@pytest.fixture(scope="module")
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


class HeldLock:
    """Another process holding a directory's lock until released (deterministic: it says
    when it holds the lock)."""

    def __init__(self, directory: Path, name: str = ".lock"):
        code = ("import sys; from pathlib import Path; from pipeline.core.rundir import locked\n"
                "with locked(Path(sys.argv[1]), name=sys.argv[2]):\n"
                "    print('held', flush=True); sys.stdin.read()")
        self.process = subprocess.Popen([sys.executable, "-c", code, str(directory), name, "pipeline", "run"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=PROJECT)
        assert self.process.stdout.readline().strip() == "held"

    def release(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


# -- 1. writes do not follow planted links -----------------------------------------------

def test_a_lock_file_that_is_a_link_to_a_users_file_is_refused_untouched(int8_copy, user_files):
    (int8_copy / ".lock").symlink_to(user_files / "notes.txt")
    for command in (["verify", "--run", int8_copy], ["quantize", "--int8", "--run", int8_copy],
                    ["prune", "--run", int8_copy], ["bench", "--run", int8_copy], ["report", "--run", int8_copy]):
        line = one_error_line(invoke(*command), 7)
        assert f"{int8_copy / '.lock'} is a symbolic link" in line, line
    assert (user_files / "notes.txt").read_text() == "my notes\n"


def test_a_planted_report_link_writes_nothing_into_the_users_folder(int8_copy, user_files):
    assert invoke("verify", "--run", int8_copy, "--quiet").exit_code == 0
    shutil.rmtree(int8_copy / "report", ignore_errors=True)
    (int8_copy / "report").symlink_to(user_files, target_is_directory=True)
    before = _snapshot(user_files)
    line = one_error_line(invoke("report", "--run", int8_copy), 7)
    assert f"{int8_copy / 'report'} is a symbolic link" in line
    assert _snapshot(user_files) == before


def test_a_planted_superseded_link_keeps_the_old_model_inside_the_run(run_copy, user_files):
    (run_copy / "superseded").symlink_to(user_files, target_is_directory=True)
    before = _snapshot(user_files)
    line = one_error_line(invoke("train", "--model", "mlp", "--epochs", "1", "--out", run_copy, "--quiet"), 7)
    assert "superseded is a symbolic link" in line
    assert _snapshot(user_files) == before
    assert (run_copy / "model.keras").exists()  # nothing was moved out


def test_writes_below_an_owned_directory_refuse_every_link_on_the_way(tmp_path, user_files):
    from pipeline.core.errors import RunDirError
    from pipeline.core.fsutil import append_line, make_dirs, owning, write_bytes, write_json, write_npy

    root = tmp_path / "search"
    (root / "tuner").mkdir(parents=True)
    (root / "tuner" / "trial_01").symlink_to(user_files, target_is_directory=True)
    (root / "screen").symlink_to(user_files, target_is_directory=True)
    before = _snapshot(user_files)
    with owning(root):
        for write in (lambda: write_json(root / "tuner" / "trial_01" / "trial.json", {}),
                      lambda: append_line(root / "tuner" / "trial_01" / "trials.log", "x"),
                      lambda: write_bytes(root / "screen" / "a.tflite", b"x"),
                      lambda: make_dirs(root / "screen" / "deeper"),
                      lambda: write_npy(root / "tuner" / "trial_01" / "sample.npy", np.zeros(3))):
            with pytest.raises(RunDirError, match="is a symbolic link"):
                write()
        # the final component itself a link: replaced by the new file, its target untouched
        (root / "search_report.md").symlink_to(user_files / "notes.txt")
        write_bytes(root / "search_report.md", b"# report")
        (root / "trials.log").symlink_to(user_files / "notes.txt")
        with pytest.raises(RunDirError, match="is a symbolic link"):
            append_line(root / "trials.log", "trial_00 1")
    assert not (root / "search_report.md").is_symlink() and (root / "search_report.md").read_bytes() == b"# report"
    assert _snapshot(user_files) == before


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    import errno

    from pipeline.core.errors import RunDirError
    from pipeline.core.fsutil import atomic_path, write_bytes

    target = write_bytes(tmp_path / "model_int8.tflite.json", b'{"old": true}')
    with pytest.raises(RunDirError, match="No space left"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b'{"new": ')
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b'{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


# -- 2. locks that hold ------------------------------------------------------------------

def test_a_second_command_is_refused_with_the_holder(int8_copy):
    holder = HeldLock(int8_copy)
    try:
        for command in (["quantize", "--int8", "--run", int8_copy], ["verify", "--run", int8_copy]):
            line = one_error_line(invoke(*command), 7)
            assert f"run directory {int8_copy} is in use by `-c" in line
            assert f"(pid {holder.process.pid}, since " in line
    finally:
        holder.release()
    assert invoke("verify", "--run", int8_copy, "--quiet").exit_code == 0  # free again


def test_a_second_pipeline_run_cannot_take_a_held_run(run_copy):
    holder = HeldLock(run_copy)
    try:
        line = one_error_line(invoke("run", "--set", "train.model=mlp", "--out", run_copy), 7)
    finally:
        holder.release()
    assert "is in use by" in line
    assert (run_copy / ".lock").is_file() and not (run_copy / "superseded").exists()  # the lock was not moved


def test_a_dead_holders_lock_is_taken_over(int8_copy):
    (int8_copy / ".lock").write_text(json.dumps({"pid": 999999, "command": "pipeline run", "since": "2020"}))
    assert invoke("verify", "--run", int8_copy, "--quiet").exit_code == 0
    assert json.loads((int8_copy / ".lock").read_text())["pid"] == os.getpid()


def test_a_killed_commands_temporary_files_are_swept_by_the_next_one(int8_copy, user_files):
    """SIGKILL leaves atomic_path's hidden temporary files; the next command that owns the
    run removes them, and only them: not a user's look-alike, not through a link, not in a
    folder with a lock of its own (a search inside the run)."""
    left = [int8_copy / ".model_int8.tflite.0123456789ab.tmp.tflite",
            int8_copy / "report" / ".a.png.00000000abcd.tmp.png"]
    kept = [int8_copy / ".notes.tmp", int8_copy / "notes.0123456789ab.tmp",
            int8_copy / "search" / ".x.json.0123456789ab.tmp.json"]
    (int8_copy / "search").mkdir()
    (int8_copy / "search" / ".lock").write_text("")
    for path in left + kept:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half")
    (int8_copy / "linked").symlink_to(user_files, target_is_directory=True)
    planted = user_files / ".mine.json.0123456789ab.tmp.json"
    planted.write_text("{}")
    assert invoke("verify", "--run", int8_copy, "--quiet").exit_code == 0
    assert not any(p.exists() for p in left) and all(p.read_bytes() == b"half" for p in kept)
    assert planted.read_text() == "{}"


def test_a_garbage_or_hard_linked_lock_file(int8_copy, user_files):
    holder = HeldLock(int8_copy)
    try:
        (int8_copy / ".lock").write_bytes(b"\x00\xffnot json")  # the holder's record, overwritten
        line = one_error_line(invoke("verify", "--run", int8_copy), 7)
        assert "in use by another pipeline command" in line
    finally:
        holder.release()
    (int8_copy / ".lock").unlink()
    os.link(user_files / "notes.txt", int8_copy / ".lock")
    assert "hard link" in one_error_line(invoke("verify", "--run", int8_copy), 7)
    assert (user_files / "notes.txt").read_text() == "my notes\n"


def test_a_search_directory_takes_one_search_at_a_time(tmp_path):
    out = tmp_path / "search"
    out.mkdir()
    options = {"model": "mlp"}
    holder = HeldLock(out)
    try:
        from pipeline.search import SearchOptions

        (out / "search_options.json").write_text(json.dumps({**SearchOptions(**options).__dict__}))
        line = one_error_line(invoke("search", "--model", "mlp", "--out", out), 7)
        assert line.startswith(f"error: search directory {out} is in use by")
    finally:
        holder.release()
    assert not (out / "tuner").exists()


# -- 3. user files are not replaced -------------------------------------------------------

def test_export_refuses_a_folder_holding_the_users_own_sources(int8_copy, tmp_path):
    firmware = tmp_path / "firmware"
    firmware.mkdir()
    (firmware / "model_data.cc").write_text("// my hand-written model\n")
    line = one_error_line(invoke("export", "--c-array", "--run", int8_copy, "--out", firmware), 7)
    assert "that an export did not write" in line
    assert (firmware / "model_data.cc").read_text() == "// my hand-written model\n"
    assert sorted(p.name for p in firmware.iterdir()) == ["model_data.cc"]
    fresh = tmp_path / "fresh"
    assert invoke("export", "--c-array", "--run", int8_copy, "--out", fresh, "--quiet").exit_code == 0
    assert invoke("export", "--c-array", "--run", int8_copy, "--out", fresh, "--quiet").exit_code == 0  # ours: again


@pytest.mark.parametrize("symbol, reason", [
    ("xor", "is a C or C++ keyword"), ("decltype", "is a C or C++ keyword"), ("bitand", "is a C or C++ keyword"),
    ("NULL", "standard headers define"), ("size_t", "standard headers define"), ("std", "standard headers define"),
    ("kNumClasses", "clashes with a name model_data.h declares"), ("kTensorArenaSize", "clashes"),
    ("_Model", "reserved identifier"), ("g__model", "reserved identifier"),
    ("g_model\n", "must be a C identifier"), ("9lives", "must be a C identifier"), ("a" * 64, "must be a C identifier"),
])
def test_export_symbols_that_would_not_compile(int8_copy, tmp_path, symbol, reason):
    exported = invoke("export", "--c-array", "--run", int8_copy, "--out", tmp_path / "c", "--symbol", symbol)
    line = one_error_line(exported, 2)
    assert reason in line
    assert not (tmp_path / "c").exists()


# -- 4. resource bombs --------------------------------------------------------------------

def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}]" for i in range(1, 10)]
    config = tmp_path / "bomb.yaml"
    config.write_text("\n".join(lines) + "\ntrain: {epochs: 1}\n")
    started = time.perf_counter()
    line = one_error_line(invoke("run", config, "--out", tmp_path / "run"), 2)
    assert "expands to more than 20,000 values" in line and time.perf_counter() - started < 30
    assert not (tmp_path / "run").exists()


def test_a_config_larger_than_a_megabyte_is_refused(tmp_path):
    config = tmp_path / "huge.yaml"
    config.write_text("# " + "x" * (1 << 20) + "\ntrain: {epochs: 1}\n")
    assert "a config is at most 1,048,576" in one_error_line(invoke("run", config), 2)


def _folder(root: Path, make_image, classes=("a", "b"), count=4) -> Path:
    from PIL import Image

    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(count):
            make_image(Image, i).save(root / name / f"{i}.png")
    return root


def test_a_decompression_bomb_in_an_image_folder(tmp_path):
    folder = _folder(tmp_path / "bomb", lambda Image, i: Image.new("1", (5000, 5000)))
    line = one_error_line(invoke("train", "--dataset", f"folder:{folder}", "--out", tmp_path / "run"), 3)
    assert "5000×5000 pixels, more than 16,777,216" in line


def test_sixteen_bit_pngs_are_scaled_not_clipped(tmp_path):
    from pipeline.data.loaders import load_dataset

    ramp = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)  # 0..65472
    folder = _folder(tmp_path / "deep", lambda Image, i: Image.fromarray(ramp), count=5)
    data = load_dataset(f"folder:{folder}", val_fraction=0.0)
    pixels = data.x_train[0, ..., 0]
    assert pixels.dtype == np.uint8 and np.mean(pixels == 255) < 0.01  # 99.6% clipped before
    assert np.allclose(pixels.astype(float), ramp / 257.0, atol=1.0)


def test_grey_alpha_palette_and_rgba_images_load_as_their_channels(tmp_path):
    from pipeline.data.loaders import load_dataset

    modes = ["RGBA", "P", "LA", "RGB"]
    folder = _folder(tmp_path / "mixed",
                     lambda Image, i: Image.new(modes[i % 4], (16, 16), 7 if modes[i % 4] == "P" else None))
    data = load_dataset(f"folder:{folder}", val_fraction=0.0)
    assert data.x_train.shape[1:] == (16, 16, 3)


def test_tiny_images_are_refused_with_a_reason(tmp_path):
    folder = _folder(tmp_path / "tiny", lambda Image, i: Image.new("L", (1, 1)))
    line = one_error_line(invoke("train", "--dataset", f"folder:{folder}", "--out", tmp_path / "run"), 3)
    assert "is 1×1 pixels: images must be at least 4×4" in line


def _idx(path: Path, shape, payload: bytes | None = None, dtype=0x08):
    import struct

    header = bytes([0, 0, dtype, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    path.write_bytes(header + (payload if payload is not None else bytes(int(np.prod(shape)))))


@pytest.mark.parametrize("case, message", [
    ("header_cut", "a header of 3 dimensions does not fit its 9 bytes"),
    ("counts", "holds 10 images of shape (4, 4), t10k-labels-idx1-ubyte 9 labels"),
    ("too_many_dims", "a header of 9 dimensions"),
])
def test_idx_files_checked_against_their_size(tmp_path, case, message):
    folder = tmp_path / "idx"
    folder.mkdir()
    _idx(folder / "train-images-idx3-ubyte", (10, 4, 4))
    _idx(folder / "train-labels-idx1-ubyte", (10,), bytes([0, 1] * 5))
    if case == "header_cut":
        (folder / "t10k-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 10, 0]))
        _idx(folder / "t10k-labels-idx1-ubyte", (10,), bytes([0, 1] * 5))
    elif case == "counts":
        _idx(folder / "t10k-images-idx3-ubyte", (10, 4, 4))
        _idx(folder / "t10k-labels-idx1-ubyte", (9,), bytes([0, 1, 0, 1, 0, 1, 0, 1, 0]))
    else:
        (folder / "t10k-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 9]) + bytes(36))
        _idx(folder / "t10k-labels-idx1-ubyte", (10,), bytes([0, 1] * 5))
    assert message in one_error_line(invoke("train", "--dataset", f"idx:{folder}", "--out", tmp_path / "run"), 3)


@pytest.mark.parametrize("option", ["--max-latency-ms", "--max-size-kb", "--max-ram-kb"])
def test_zero_budgets_are_refused(tmp_path, option):
    line = one_error_line(invoke("search", option, "0", "--out", tmp_path / "s"), 2)
    assert line == f"error: {option} must lie in (0, {'1e+09' if option != '--max-size-kb' else '1e+12'}], got 0.0"
    assert not (tmp_path / "s").exists()


def test_path_components_over_255_bytes_are_one_line(quantized_run, tmp_path):
    long = tmp_path / ("x" * 300)
    for command, code in ((["verify", "--run", long], 2), (["search", "--out", long / "s"], 2),
                          (["quantize", "--int8", "--run", quantized_run, "--calibration-data", long], 2)):
        result = invoke(*command)
        assert result.exit_code in (code, 3, 7), (command, result.output)
        line = one_error_line(result, result.exit_code)
        assert "300 bytes; file systems allow 255" in line or "does not exist" in line, line
    done = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "info", str(long)], capture_output=True, text=True)
    assert done.returncode in (2, 4) and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr


# -- 5. state that lies -------------------------------------------------------------------

def test_a_state_that_claims_a_stage_with_missing_outputs_reruns_it(tmp_path):
    from pipeline.running.stage_cache import Stages

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stages = Stages(run_dir, set(), None)
    ran = []

    def work():
        ran.append(1)
        (run_dir / "model_int8.tflite").write_bytes(b"artifact")
        return [run_dir / "model_int8.tflite"]

    assert stages.run("quantize", "quantize", {"a": 1}, work)
    (run_dir / "model_int8.tflite").unlink()  # the state still says done
    assert Stages(run_dir, set(), None).run("quantize", "quantize", {"a": 1}, work) and len(ran) == 2
    state = json.loads((run_dir / "pipeline_state.json").read_text())
    state["stages"]["quantize"]["outputs"] = {}  # "done, and it wrote nothing"
    (run_dir / "pipeline_state.json").write_text(json.dumps(state))
    assert Stages(run_dir, set(), None).run("quantize", "quantize", {"a": 1}, work) and len(ran) == 3
    assert not Stages(run_dir, set(), None).run("quantize", "quantize", {"a": 1}, work)  # intact: cached


@pytest.mark.parametrize("content", [b"\x00garbage", b"[]", b'{"stages": []}', b'{"stages": {"train": 5}}',
                                     b'{"stages": {"train": {"inputs": 1, "outputs": {"../../etc/passwd": "x"}}}}'])
def test_a_garbage_state_is_ignored_not_a_traceback(tmp_path, content):
    from pipeline.running.stage_cache import Stages

    (tmp_path / "pipeline_state.json").write_bytes(content)
    assert Stages(tmp_path, set(), None).state == {"stages": {}}


# -- 6. files read back are checked by type -----------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("preprocessing", {"scale": "x"}, "preprocessing.scale must be a positive number"),
    ("preprocessing", {"mean": "abc", "input_shape": [28, 28, 1]}, "preprocessing.mean must be a number"),
    ("preprocessing", {"mean": [0.1, 0.2], "input_shape": [28, 28, 1]},
     "preprocessing.mean has 2 values for inputs of 1 channels"),
    ("inputs", "nope", "inputs must be a list of objects"),
    ("inputs", [{"name": "x", "shape": "1x28", "dtype": "int8"}], "inputs[0].shape must be a list of integers"),
    ("class_names", [1, 2], "class_names must be a list of strings"),
    ("sha256", 12, "sha256 must be 64 hexadecimal digits"),
])
def test_sidecar_fields_of_the_wrong_type(int8_copy, field, value, message, capsys):
    from edge_runtime.cli import main

    sidecar_path = int8_copy / "model_int8.tflite.json"
    sidecar = json.loads(sidecar_path.read_text())
    sidecar[field] = {**sidecar[field], **value} if isinstance(value, dict) else value
    sidecar_path.write_text(json.dumps(sidecar))
    assert main(["info", str(int8_copy / "model_int8.tflite")]) == 4  # the device's command line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    line = one_error_line(invoke("verify", "--run", int8_copy), 4)
    assert message in line


def test_a_planted_accuracy_outside_zero_and_one_is_refused(int8_copy):
    assert invoke("verify", "--run", int8_copy, "--quiet").exit_code == 0
    train = json.loads((int8_copy / "train.json").read_text())
    train["test_accuracy"] = 1.5
    (int8_copy / "train.json").write_text(json.dumps(train))
    line = one_error_line(invoke("report", "--run", int8_copy), 7)
    assert "test_accuracy must be a number in [0, 1], got 1.5" in line


def test_edge_runtime_eval_refuses_a_pickled_npz(int8_copy, tmp_path):
    data = tmp_path / "evil.npz"
    np.savez(data, x=np.array([object(), 1], dtype=object), y=np.array([0, 1]))
    done = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "eval", str(int8_copy / "model_int8.tflite"),
                           str(data)], capture_output=True, text=True)
    assert done.returncode == 3 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize("answer, why", [
    ("", "no output"), ("<html>", "not JSON"), ("[1, 2]", "no device description"),
    ('{"device": {}, "results": []}', "no results"),
    ('{"device": {}, "results": [{"p50_ms": "fast"}]}', "p50_ms 'fast' is not a positive latency"),
    ('{"device": {}, "results": [{"p50_ms": -1}]}', "is not a positive latency"),
    ('{"device": {}, "results": [{"p50_ms": 1, "threads": "all"}]}', "threads is not an integer"),
])
def test_a_device_that_answers_garbage(answer, why):
    from pipeline.core.errors import PipelineError
    from pipeline.device.remote import _device_answer

    with pytest.raises(PipelineError, match="is not a bench report") as raised:
        _device_answer(answer, "ssh://pi", "model_int8.tflite")
    assert why in str(raised.value)


def test_a_damaged_baseline_record_is_retrained_not_a_traceback(tmp_path):
    from pipeline.search.winner import _recorded_accuracy

    (tmp_path / "train.json").write_text('{"test_accuracy": "high"}')
    assert _recorded_accuracy(tmp_path) is None
    (tmp_path / "train.json").write_text("[1]")
    assert _recorded_accuracy(tmp_path) is None
    (tmp_path / "train.json").write_text('{"test_accuracy": 0.5}')
    assert _recorded_accuracy(tmp_path) == 0.5


# -- 7. silently wrong, 8. misleading -------------------------------------------------------

def test_a_one_class_data_set_and_too_few_class_names(tmp_path):
    one = tmp_path / "one.npz"
    np.savez(one, x_train=np.zeros((20, 8, 8), np.uint8), y_train=np.zeros(20, int),
             x_test=np.zeros((5, 8, 8), np.uint8), y_test=np.zeros(5, int))
    line = one_error_line(invoke("train", "--dataset", f"npz:{one}", "--out", tmp_path / "r1"), 3)
    assert "has one class ('0'): a classifier needs at least two" in line
    few = tmp_path / "few.npz"
    np.savez(few, x_train=np.zeros((20, 8, 8), np.uint8), y_train=np.arange(20) % 3,
             x_test=np.zeros((6, 8, 8), np.uint8), y_test=np.arange(6) % 3, class_names=np.array(["cat", "dog"]))
    line = one_error_line(invoke("train", "--dataset", f"npz:{few}", "--out", tmp_path / "r2"), 3)
    assert "labels up to 2 but only 2 class names" in line


def test_repeated_space_options_merge():
    from pipeline.cli.searching import parse_space

    assert parse_space(["learning_rate=0.001", "learning_rate=0.003,0.001", "hidden=32"]) == {
        "learning_rate": [0.001, 0.003], "hidden": [32]}


def test_seed_zero_reaches_kerastuner(digits, tmp_path):
    from pipeline.search import SearchOptions, Timer
    from pipeline.search.trials import _tuner

    options = SearchOptions(model="mlp", seed=0)
    draws = []
    for attempt in range(2):
        out = tmp_path / f"s{attempt}"
        out.mkdir()
        tuner, _ = _tuner(options, digits, out, Timer(options, digits.x_val[0], out))
        assert tuner.oracle.seed == 0
        draws.append([tuner.oracle._random_values() for _ in range(5)])
    assert draws[0] == draws[1]


def test_calibration_floats_are_not_told_to_drop_raw(int8_copy, digits, tmp_path):
    samples = tmp_path / "scaled.npy"
    np.save(samples, digits.x_train[:50].astype(np.float32) / 255.0)
    line = one_error_line(invoke("quantize", "--int8", "--run", int8_copy, "--calibration-data", samples), 3)
    assert "--raw" not in line and "a calibration file holds raw samples like the data set's (uint8)" in line


def test_sigterm_is_one_line_exit_143_and_leaves_whole_files(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen([*PIPELINE, "train", "--epochs", "200", "--out", str(out)], cwd=PROJECT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / ".lock").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == "terminated (SIGTERM)"
    for path in out.rglob("*.json"):
        if not path.name.startswith("."):  # a hidden temporary is never read
            json.loads(path.read_text())


# -- a seeded fuzz of the files read back ------------------------------------------------

_HOSTILE_VALUES = [None, True, -1, 0, 1e308, float("nan"), "", "x" * 300, [], [None], {}, {"a": [1]}, [[[]]],
                   "../../etc/passwd", -(2 ** 63), [1.5, "two"], {"scale": "1/255"}]


def _mutations(document, rng, count):
    """``count`` copies of a JSON document, each with one field (at any depth) replaced."""
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, (*path, key))
        elif isinstance(node, list):
            for index, value in enumerate(node[:3]):
                walk(value, (*path, index))

    walk(document, ())
    for _ in range(count):
        mutated = json.loads(json.dumps(document))
        path = paths[rng.integers(1, len(paths))]
        node = mutated
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = _HOSTILE_VALUES[rng.integers(len(_HOSTILE_VALUES))]
        yield ".".join(map(str, path)), mutated


def test_sixty_mutated_sidecars_are_one_line_or_a_right_answer(int8_copy, digits, tmp_path, capsys):
    """Every field of a sidecar, at any depth, replaced by a hostile value: `edge-runtime
    predict --raw` (which reads the preprocessing and the quantization) either answers as
    with the original sidecar or prints one error line with exit 3 or 4; never a traceback."""
    from edge_runtime.cli import main

    model = int8_copy / "model_int8.tflite"
    sidecar_path = int8_copy / "model_int8.tflite.json"
    original = json.loads(sidecar_path.read_text())
    sample = tmp_path / "x.npy"
    np.save(sample, digits.x_test[:2])
    assert main(["predict", str(model), str(sample), "--raw", "--json"]) == 0
    expected = capsys.readouterr().out
    outcomes = {}
    for field, mutated in _mutations(original, np.random.default_rng(21), 60):
        sidecar_path.write_text(json.dumps(mutated, allow_nan=True))
        code = main(["predict", str(model), str(sample), "--raw", "--json"])
        captured = capsys.readouterr()
        if code == 0:
            assert captured.err == "", (field, captured.err)
        else:
            one_line = captured.err.startswith("error: ") and captured.err.count("\n") == 1
            assert code in (3, 4) and one_line, (field, captured)
        outcomes[field] = code if code else ("same" if captured.out == expected else "different")
    # a changed answer is acceptable only where the field says how to read the model
    changed = {f for f, o in outcomes.items() if o == "different"}
    assert all(f.startswith(("preprocessing", "inputs", "outputs", "class_names")) for f in changed), changed
    assert sum(o in (3, 4) for o in outcomes.values()) >= 20  # most mutations are refused


def test_forty_mutated_states_and_measurements_are_ignored_or_used_whole(tmp_path):
    """pipeline_state.json and a search trial's measurement.json, mutated: each is either
    taken as a whole (well formed) or ignored (its stage or trial runs again); never a crash."""
    from pipeline.running.stage_cache import valid_stages
    from pipeline.search.trials import _finished_measurement

    state = {"stages": {"train": {"inputs": "ab" * 32, "outputs": {"model.keras": "cd" * 32}, "finished": 1.0}}}
    values = {"hidden": "32", "learning_rate": 0.001, "optimizer": "adam", "batch_size": 32,
              "sparsity": 0.0, "quantization": "int8"}
    measurement = {"hyperparameters": values, "metrics": {"val_accuracy": 0.9, "val_log_loss": 0.3,
                                                          "p50_ms": 0.01, "size_kb": 30.0, "feasible": 1.0,
                                                          "score": 0.9}}
    rng = np.random.default_rng(22)
    for field, mutated in _mutations(state, rng, 20):
        (tmp_path / "pipeline_state.json").write_text(json.dumps(mutated))
        kept = valid_stages(tmp_path / "pipeline_state.json")
        assert kept == {} or json.dumps(kept) == json.dumps(mutated["stages"]), field
    trial = tmp_path / "trial_00"
    trial.mkdir()
    for field, mutated in _mutations(measurement, rng, 20):
        (trial / "measurement.json").write_text(json.dumps(mutated))
        found = _finished_measurement(trial, values)
        assert found is None or all(isinstance(v, float) and np.isfinite(v) for v in found.values()), field


def test_a_search_timed_on_an_unreachable_device_is_one_line(tmp_path):
    """No budgets, so nothing is screened: the first trial's timing meets the dead device.
    KerasTuner would retry that as a failed trial and end in its own RuntimeError."""
    done = subprocess.run([*PIPELINE, "search", "--model", "mlp", "--epochs", "1", "--trials", "2",
                           "--device", "ssh://127.0.0.1:1", "--ssh-option", "ConnectTimeout=5",
                           "--out", str(tmp_path / "s"), "--quiet"],
                          capture_output=True, text=True, timeout=600, cwd=PROJECT)
    assert done.returncode == 9, done.stderr[-2000:]
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
