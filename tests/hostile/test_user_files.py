"""Hostile conditions: The user's own files are not replaced: export refuses a folder of the user's
sources and symbols that would not compile. Each case asserts what a user sees (one ``error:``
line and a documented exit code, or the right result) and what a user cares about (their files
unchanged)."""

import pytest

from tests.hostile.helpers import invoke, one_error_line


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
