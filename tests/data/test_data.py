import gzip
import struct

import numpy as np
import pytest

from pipeline.core.errors import DataError, UsageError
from pipeline.data.idx import read_idx
from pipeline.data.loaders import load_dataset


def test_digits_is_served_at_mnist_geometry(digits):
    assert digits.input_shape == (28, 28, 1)
    assert digits.x_train.dtype == np.uint8 and digits.x_train.max() == 255
    x, y = digits.split("train")
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() == 1.0
    assert digits.num_classes == 10
    sizes = digits.describe()["sizes"]
    assert sizes == {"train": 1293, "val": 144, "test": 360}
    # MNIST-like: the 4-pixel border around the 20x20 digit box is empty
    assert digits.x_train[:, :4].max() == 0 and digits.x_train[:, -4:].max() == 0


def test_splits_are_stratified_and_seeded(digits):
    again = load_dataset("digits")
    np.testing.assert_array_equal(digits.y_test, again.y_test)
    other = load_dataset("digits", seed=1)
    assert not np.array_equal(digits.y_test, other.y_test)
    counts = np.bincount(digits.y_test)
    assert counts.min() >= 35 and counts.max() <= 37  # 360 test samples over 10 classes


def test_image_size_changes_geometry():
    small = load_dataset("digits", image_size=16)
    assert small.input_shape == (16, 16, 1)
    assert small.preprocessing["input_shape"] == [16, 16, 1]


def test_preprocessing_is_recorded(digits):
    spec = digits.preprocessing
    assert spec["raw_dtype"] == "uint8" and spec["scale"] == pytest.approx(1 / 255)
    assert spec["class_names"] == [str(i) for i in range(10)]


def test_unknown_dataset_suggests_closest():
    with pytest.raises(UsageError, match="unknown data set 'digit'. Did you mean 'digits'"):
        load_dataset("digit")


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_dataset(tmp_path):
    rng = np.random.default_rng(0)
    spec = _npz(tmp_path / "d.npz", x_train=rng.random((60, 6)).astype("float32"),
                y_train=np.arange(60) % 3, x_test=rng.random((30, 6)).astype("float32"),
                y_test=np.arange(30) % 3)
    dataset = load_dataset(spec)
    assert dataset.input_shape == (6,) and dataset.num_classes == 3
    assert len(dataset.y_train) + len(dataset.y_val) == 60 and len(dataset.y_test) == 30
    assert dataset.preprocessing["scale"] == 1.0


def test_npz_errors(tmp_path):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(DataError, match="not a readable .npz archive"):
        load_dataset(f"npz:{corrupt}")
    missing = _npz(tmp_path / "missing.npz", x_train=np.zeros((4, 2)), y_train=np.zeros(4))
    with pytest.raises(DataError, match="lacks x_test, y_test"):
        load_dataset(missing)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")
    negative = _npz(tmp_path / "neg.npz", x_train=np.zeros((10, 2)), y_train=np.r_[np.arange(9) % 3, -1],
                    x_test=np.zeros((3, 2)), y_test=np.arange(3))
    with pytest.raises(DataError, match="label -1"):
        load_dataset(negative)
    nan = np.zeros((10, 2))
    nan[3, 1] = np.nan
    with_nan = _npz(tmp_path / "nan.npz", x_train=nan, y_train=np.arange(10) % 2,
                    x_test=np.zeros((4, 2)), y_test=np.arange(4) % 2)
    with pytest.raises(DataError, match="1 NaN or inf values"):
        load_dataset(with_nan)
    empty = _npz(tmp_path / "empty.npz", x_train=np.zeros((0, 2)), y_train=np.zeros(0, int),
                 x_test=np.zeros((0, 2)), y_test=np.zeros(0, int))
    with pytest.raises(DataError, match="is empty"):
        load_dataset(empty)
    mismatched = _npz(tmp_path / "mismatch.npz", x_train=np.zeros((10, 2)), y_train=np.arange(10) % 2,
                      x_test=np.zeros((4, 3)), y_test=np.arange(4) % 2)
    with pytest.raises(DataError, match="x_test samples have shape"):
        load_dataset(mismatched)


def _write_idx(path, array):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.tobytes())


def test_idx_dataset(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (100, 28, 28), dtype=np.uint8)
    labels = (np.arange(100) % 10).astype(np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), images)
    dataset = load_dataset(f"idx:{tmp_path}")
    assert dataset.input_shape == (28, 28, 1) and len(dataset.y_test) == 20


def test_truncated_idx_is_reported(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 10, 28, 28) + b"\0" * 100)
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_image_folder_dataset(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(10):
            pixels = rng.integers(0, 256, (12, 12), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(tmp_path / label / f"{i}.png")
    dataset = load_dataset(f"folder:{tmp_path}", image_size=8)
    assert dataset.input_shape == (8, 8, 1)
    assert dataset.class_names == ["cat", "dog"]


def test_download_offline_gives_one_clear_line(tmp_path):
    import subprocess
    import sys

    code = ("from pipeline.data.loaders import load_dataset\n"
            "from pipeline.core.errors import DataError\n"
            "try:\n    load_dataset('fashion_mnist')\n"
            "except DataError as e:\n    print('DATAERROR', e)\n")
    env = {**__import__('os').environ, "KERAS_HOME": str(tmp_path), "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert "DATAERROR could not download data set 'fashion_mnist'" in out.stdout, out.stderr[-2000:]
    assert "--dataset npz:PATH" in out.stdout
