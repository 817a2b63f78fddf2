"""Hostile conditions: Inputs that are bounded: config alias bombs and sizes, image decompression
bombs and odd formats, IDX headers against their size, zero budgets, over-long path components.
Each case asserts what a user sees (one ``error:`` line and a documented exit code, or the right
result) and what a user cares about (their files unchanged)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.hostile.helpers import invoke, one_error_line


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}]" for i in range(1, 10)]
    config = tmp_path / "bomb.yaml"
    config.write_text("\n".join(lines) + "\ntrain: {epochs: 1}\n")
    line = one_error_line(invoke("run", config, "--out", tmp_path / "run"), 2)
    assert "expands to more than 20,000 values" in line  # 9^10 values: refused before they exist
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
