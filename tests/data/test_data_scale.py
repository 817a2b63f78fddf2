"""Data at scale: folder splits from the layout, the run's decode cache (hit, invalidated,
damaged, planted links), bounded-memory helpers and streamed training."""
import json
import logging
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.core.errors import DataError
from pipeline.data.loaders import load_dataset

runner = CliRunner()


def _image_folder(root, counts: dict[str, int], *, start: int = 0, size: int = 10):
    """``root/<class>/i.png``: grey images whose top-left pixel is a unique number."""
    from PIL import Image

    number = start
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = np.full((size, size), (7 * number) % 200 + 20, dtype=np.uint8)
            pixels[0, 0] = number % 256
            Image.fromarray(pixels, mode="L").save(root / name / f"{i:03d}.png")
            number += 1
    return root


def _ids(x: np.ndarray) -> set[int]:
    return {int(v) for v in x[:, 0, 0, 0]}


def test_train_and_test_sub_folders_are_the_splits(tmp_path):
    _image_folder(tmp_path / "train", {"cat": 12, "dog": 8}, start=0)
    _image_folder(tmp_path / "test", {"cat": 3, "dog": 2}, start=100)
    data = load_dataset(f"folder:{tmp_path}", val_fraction=0.25)
    assert data.class_names == ["cat", "dog"]
    assert _ids(data.x_test) == set(range(100, 105))  # exactly the test/ images
    assert data.size("train") + data.size("val") == 20 and data.size("val") == 5
    assert _ids(data.x_train) | _ids(data.x_val) == set(range(20))
    assert sorted(data.y_test.tolist()) == [0, 0, 0, 1, 1]


def test_a_val_sub_folder_is_the_validation_split(tmp_path):
    _image_folder(tmp_path / "train", {"a": 6, "b": 6}, start=0)
    _image_folder(tmp_path / "val", {"a": 2, "b": 2}, start=50)
    _image_folder(tmp_path / "test", {"a": 2, "b": 1}, start=100)
    data = load_dataset(f"folder:{tmp_path}")
    assert _ids(data.x_val) == set(range(50, 54)) and _ids(data.x_train) == set(range(12))
    assert data.size("test") == 3


def test_a_test_class_the_training_split_lacks_is_one_clear_error(tmp_path):
    _image_folder(tmp_path / "train", {"a": 4, "b": 4})
    _image_folder(tmp_path / "test", {"a": 2, "zebra": 2}, start=50)
    with pytest.raises(DataError, match="zebra.*does not have"):
        load_dataset(f"folder:{tmp_path}")


def test_the_class_per_folder_layout_still_splits_by_fraction(tmp_path):
    _image_folder(tmp_path, {"train": 10, "test": 10})  # classes that happen to be named so
    data = load_dataset(f"folder:{tmp_path}", val_fraction=0.0, test_fraction=0.2)
    assert data.class_names == ["test", "train"] and data.size("test") == 4 and data.size("train") == 16


@pytest.fixture
def folder(tmp_path):
    return _image_folder(tmp_path / "images", {"a": 15, "b": 15, "c": 15})


def _load(folder, cache, caplog):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline"):
        data = load_dataset(f"folder:{folder}", seed=3, cache=cache)
    return data, caplog.text


def test_the_decode_cache_is_hit_and_gives_the_same_data(folder, tmp_path, caplog):
    plain = load_dataset(f"folder:{folder}", seed=3)
    first, said = _load(folder, tmp_path / "cache", caplog)
    assert "decoded" in said
    again, said = _load(folder, tmp_path / "cache", caplog)
    assert "from the run's decode cache" in said and "decoded" not in said
    assert isinstance(again.x_train, np.memmap)
    assert plain.sha256() == first.sha256() == again.sha256()
    np.testing.assert_array_equal(plain.x_test, again.x_test)
    np.testing.assert_array_equal(plain.y_train, again.y_train)


def test_a_changed_folder_is_decoded_again_and_the_old_entry_goes(folder, tmp_path, caplog):
    first, _ = _load(folder, tmp_path / "cache", caplog)
    _image_folder(folder, {"a": 1}, start=200)  # a.000.png rewritten: another pixel, mtime
    os.utime(folder / "a" / "000.png", ns=(1, 1))
    second, said = _load(folder, tmp_path / "cache", caplog)
    assert "decoded" in said and second.sha256() != first.sha256()
    assert len(list((tmp_path / "cache").iterdir())) == 1


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "planted link", "bad index"])
def test_a_damaged_cache_entry_is_said_and_decoded_again(folder, tmp_path, caplog, damage):
    first = _load(folder, tmp_path / "cache", caplog)[0].sha256()  # before the damage: it maps the files
    entry = next((tmp_path / "cache").iterdir())
    target = entry / "x_test.npy"
    if damage == "flip a byte":
        data = bytearray(target.read_bytes())
        data[-1] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:-7])
    elif damage == "planted link":
        elsewhere = tmp_path / "other.npy"
        np.save(elsewhere, np.zeros((9, 10, 10, 1), np.uint8))
        target.unlink()
        target.symlink_to(elsewhere)
    else:
        (entry / "index.json").write_text("{not json")
    again, said = _load(folder, tmp_path / "cache", caplog)
    assert "damaged" in said and "decoded" in said
    assert again.sha256() == first
    if damage == "planted link":
        assert not (entry / "x_test.npy").is_symlink()
        np.testing.assert_array_equal(np.load(tmp_path / "other.npy"), 0)  # not written through


def test_a_cache_that_is_not_written_leaves_the_run_alone(folder, tmp_path, caplog):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline"):
        data = load_dataset(f"folder:{folder}", seed=3, cache=tmp_path / "cache", write_cache=False)
    assert not (tmp_path / "cache").exists() and data.size("test") == 9


def test_take_and_chunks_preprocess_only_what_they_return(digits):
    x, y = digits.take("train", [5, 0, 7])
    full_x, full_y = digits.split("train")
    np.testing.assert_array_equal(x, full_x[[5, 0, 7]])
    np.testing.assert_array_equal(y, full_y[[5, 0, 7]])
    chunks = list(digits.chunks("test", 100))
    assert [len(c[0]) for c in chunks] == [100, 100, 100, 60]
    np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]), digits.split("test")[0])
    with pytest.raises(DataError, match="outside the train split"):
        digits.take("train", [10_000])


def test_streamed_training_learns_and_later_commands_hit_the_cache(tmp_path):
    """--stream always on a folder: the model learns (digits written as PNGs); quantize and
    verify on the run read the decode cache instead of decoding the folder again."""
    from PIL import Image

    digits = load_dataset("digits", val_fraction=0.0, test_fraction=0.2)
    root = tmp_path / "digits"
    for split, x, y in (("train", digits.x_train, digits.y_train), ("test", digits.x_test, digits.y_test)):
        for i, (image, label) in enumerate(zip(x, y)):
            (root / split / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[..., 0], mode="L").save(root / split / str(label) / f"{i}.png")
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--dataset", f"folder:{root}", "--stream", "always", "--epochs", "4",
                                 "--out", str(run)])
    assert result.exit_code == 0, result.output
    info = json.loads((run / "train.json").read_text())
    assert info["data"]["sizes"] == {"train": 1293, "val": 144, "test": 360}
    assert info["test_accuracy"] >= 0.90  # 360 test digits; a model that learned is at 95-99%
    quantized = runner.invoke(app, ["quantize", "--run", str(run), "--int8", "--no-recover"])
    assert quantized.exit_code == 0, quantized.output
    assert "from the run's decode cache" in quantized.stderr and "decoded" not in quantized.stderr
    verified = runner.invoke(app, ["verify", "--run", str(run)])
    assert verified.exit_code == 0, verified.output
    assert "from the run's decode cache" in verified.stderr
    # Pruning follows the run's streaming: it fine-tunes on streamed batches and still learns.
    pruned = runner.invoke(app, ["prune", "--run", str(run), "--fine-tune-epochs", "2"])
    assert pruned.exit_code == 0, pruned.output
    assert "from the run's decode cache" in pruned.stderr
    report = json.loads((run / "prune.json").read_text())
    assert report["streamed"] is True and report["after"]["params"] < report["before"]["params"]
    assert report["after"]["accuracy"] >= 0.85  # 360 test digits; measured 0.9472 after 2 epochs
    # So does quantization-aware training: its fine-tune reads streamed batches too.
    qat = runner.invoke(app, ["quantize", "--run", str(run), "--int8", "--qat", "--qat-epochs", "1", "--no-recover"])
    assert qat.exit_code == 0, qat.output
    assert json.loads((run / "quantize.json").read_text())["qat"]["streamed"] is True
    verified = runner.invoke(app, ["verify", "--run", str(run), "--artifact", "model_int8_qat.tflite",
                                   "--gate", "qat.fake_quant_agreement=0.99"])
    assert verified.exit_code == 0, verified.output


def test_stream_takes_known_values_only():
    result = runner.invoke(app, ["train", "--stream", "sometimes"])
    assert result.exit_code == 2 and "stream" in result.stderr


def test_the_tensorflow_stream_feeds_exactly_the_preprocessed_split(folder, tmp_path, caplog):
    """Under TensorFlow a cached split is read by tf.data from its file: the same samples, with
    the same float32 preprocessing, as ``Dataset.split``, each once per epoch."""
    import keras

    from pipeline.data.streaming import streamed_input

    data, _ = _load(folder, tmp_path / "cache", caplog)
    x, y = data.split("train")
    stream = streamed_input(keras, data, "train", None, 8, task="classifier", shuffle_seed=0)
    assert type(stream).__module__.startswith("tensorflow")
    batches = [(bx.numpy(), by.numpy()) for bx, by in stream]
    fed_x, fed_y = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
    order = np.argsort(fed_x[:, 0, 0, 0], kind="stable")  # the top-left pixel numbers each image
    np.testing.assert_array_equal(fed_x[order], x[np.argsort(x[:, 0, 0, 0], kind="stable")])
    np.testing.assert_array_equal(fed_y[order], y[np.argsort(x[:, 0, 0, 0], kind="stable")])
    assert not np.array_equal(fed_y, y)  # shuffled
    unshuffled = streamed_input(keras, data, "test", None, 4, task="classifier")
    np.testing.assert_array_equal(np.concatenate([bx.numpy() for bx, _ in unshuffled]), data.split("test")[0])
