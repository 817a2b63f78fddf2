"""Hostile conditions: Writes stay inside the directory a command owns: planted links are refused,
the user's files behind them untouched, an interrupted write leaves the old file. Each case
asserts what a user sees (one ``error:`` line and a documented exit code, or the right result)
and what a user cares about (their files unchanged)."""
import shutil

import numpy as np
import pytest

from tests.hostile.helpers import invoke, one_error_line, snapshot


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
    before = snapshot(user_files)
    line = one_error_line(invoke("report", "--run", int8_copy), 7)
    assert f"{int8_copy / 'report'} is a symbolic link" in line
    assert snapshot(user_files) == before


def test_a_planted_superseded_link_keeps_the_old_model_inside_the_run(run_copy, user_files):
    (run_copy / "superseded").symlink_to(user_files, target_is_directory=True)
    before = snapshot(user_files)
    line = one_error_line(invoke("train", "--model", "mlp", "--epochs", "1", "--out", run_copy, "--quiet"), 7)
    assert "superseded is a symbolic link" in line
    assert snapshot(user_files) == before
    assert (run_copy / "model.keras").exists()  # nothing was moved out


def test_writes_below_an_owned_directory_refuse_every_link_on_the_way(tmp_path, user_files):
    from pipeline.core.errors import RunDirError
    from pipeline.core.fsutil import append_line, make_dirs, owning, write_bytes, write_json, write_npy

    root = tmp_path / "search"
    (root / "tuner").mkdir(parents=True)
    (root / "tuner" / "trial_01").symlink_to(user_files, target_is_directory=True)
    (root / "screen").symlink_to(user_files, target_is_directory=True)
    before = snapshot(user_files)
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
    assert snapshot(user_files) == before


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
