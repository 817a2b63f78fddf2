"""Hostile conditions: Locks that hold: one command per run or search directory, a dead holder's
lock taken over, a killed command's temporary files swept. Each case asserts what a user sees
(one ``error:`` line and a documented exit code, or the right result) and what a user cares
about (their files unchanged)."""
import json
import os
import subprocess
import sys

from tests.hostile.helpers import PROJECT, HeldLock, invoke, one_error_line


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
        # Refused before TensorFlow, Keras or the data set are loaded (seconds, not a minute under
        # load): in a process that cannot import them, the answer is the same line.
        code = ("import importlib.abc, sys\n"
                "class Block(importlib.abc.MetaPathFinder):\n"
                "    def find_spec(self, name, path=None, target=None):\n"
                "        if name.split('.')[0] in ('tensorflow', 'keras', 'keras_tuner', 'sklearn'):\n"
                "            raise ImportError(name + ' is not loaded before the lock')\n"
                "sys.meta_path.insert(0, Block())\n"
                "from pipeline.cli import main\n"
                "sys.argv = ['pipeline', 'search', '--model', 'mlp', '--out', sys.argv[1]]\n"
                "main()\n")
        done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True,
                              timeout=300, cwd=PROJECT)
        assert done.returncode == 7 and f"search directory {out} is in use by" in done.stderr, done.stderr[-500:]
    finally:
        holder.release()
    assert not (out / "tuner").exists()
