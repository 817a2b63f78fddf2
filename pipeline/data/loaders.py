"""Data sets: a registry of loaders that all return raw samples plus a preprocessing spec.

Raw samples stay raw (uint8 pixels where the source has them); the float32 the model
sees comes from ``edge_runtime.preprocessing.apply_preprocessing`` with the recorded spec,
so the device applies exactly the same transformation.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.core.errors import DataError, unknown_name
from pipeline.data.dataset import Dataset, check_class_names, release  # noqa: F401 - Dataset and release are this module's API too
from pipeline.data.idx import read_idx
from pipeline.data.image_folder import (
    GREY_MODES,
    MAX_DECODED_BYTES,
    SPLIT_FOLDERS,
    decode_into,
    decode_size,
    scan_image_folder,
)

DEFAULT_DATASET = "digits"
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.2


# -- registry -----------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetLoader:
    """A data set name (``npz:PATH`` style when it ``takes_path``), its help line and loader."""

    name: str
    help: str
    takes_path: bool
    load: Callable[..., Dataset]


_LOADERS: dict[str, DatasetLoader] = {}


def register_dataset(name: str, *, takes_path: bool = False, help: str = ""):
    def decorator(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        if name in _LOADERS:
            raise ValueError(f"data set '{name}' is registered twice")
        _LOADERS[name] = DatasetLoader(name, help or (fn.__doc__ or "").strip(), takes_path, fn)
        return fn
    return decorator


def loaders() -> list[DatasetLoader]:
    """Every registered data set loader, in registration order."""
    return list(_LOADERS.values())


def load_dataset(spec: str = DEFAULT_DATASET, *, seed: int = 0, image_size: int | None = None,
                 val_fraction: float = DEFAULT_VAL_FRACTION,
                 test_fraction: float = DEFAULT_TEST_FRACTION,
                 cache: str | os.PathLike | None = None, write_cache: bool = True) -> Dataset:
    """Load a data set by name (``digits``) or by ``kind:PATH`` (``npz:data.npz``).

    With ``cache`` (a run's ``data_cache`` folder), a data set given by path is decoded once
    into it and memory-mapped from it afterwards (``pipeline.data.cache``); ``write_cache``
    False reads a sound entry but writes none (the caller does not hold the run's lock)."""
    loader, path = _loader_for(spec)
    if not 0 <= val_fraction < 1 or not 0 < test_fraction < 1:
        raise DataError("validation and test fractions must lie in [0, 1) and (0, 1)")
    kwargs = dict(seed=seed, image_size=image_size, val_fraction=val_fraction,
                  test_fraction=test_fraction)
    if loader.takes_path and cache is not None:
        from pipeline.data.cache import cached_load

        dataset = cached_load(Path(cache), spec, loader.load, path, kwargs, writable=write_cache, check=_validate)
    else:
        dataset = loader.load(path, **kwargs) if loader.takes_path else loader.load(**kwargs)
    _validate(dataset)
    return dataset


def check_source(spec: str) -> None:
    """Refuse an unknown data set, a missing path or a folder without images, before a command
    creates anything (cheap: no image is decoded)."""
    loader, path = _loader_for(spec)
    if loader.name == "folder":
        scan_image_folder(path)
    elif loader.takes_path and not Path(path).exists():
        raise DataError(f"data set '{spec}': {path} does not exist")


def _loader_for(spec: str) -> tuple[DatasetLoader, str]:
    name, _, path = spec.partition(":")
    loader = _LOADERS.get(name)
    if loader is None:
        raise unknown_name("data set", name, _LOADERS)
    if loader.takes_path and not path:
        raise DataError(f"data set '{name}' needs a path: --dataset {name}:PATH")
    if not loader.takes_path and path:
        raise DataError(f"data set '{name}' takes no path (got '{spec}')")
    return loader, path


# -- helpers ------------------------------------------------------------------------------

def stratified_split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    """Seeded, stratified split: ``(x_rest, y_rest, x_part, y_part)`` with ``fraction`` in part."""
    from sklearn.model_selection import train_test_split

    if fraction <= 0:
        return x, y, x[:0], y[:0]
    counts = np.bincount(y)
    classes = int(np.count_nonzero(counts))
    part = int(np.ceil(len(y) * fraction))
    # Stratify when every class can appear on both sides; tiny data sets fall back to random.
    can_stratify = counts[counts > 0].min() >= 2 and classes <= part <= len(y) - classes
    stratify = y if can_stratify else None
    x_rest, x_part, y_rest, y_part = train_test_split(
        x, y, test_size=fraction, random_state=seed, stratify=stratify)
    return x_rest, y_rest, x_part, y_part


def _finish(name: str, x_train, y_train, x_test, y_test, *, seed: int, val_fraction: float,
            image_size: int | None, class_names: list[str] | None = None) -> Dataset:
    """Common tail of every loader: shape, resize, validation split, preprocessing spec."""
    x_train, x_test = _as_nhwc(x_train, "x_train"), _as_nhwc(x_test, "x_test")
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        labels = np.asarray(y)
        if labels.ndim == 0 or len(x) != len(labels):
            raise DataError(f"data set '{name}': x_{split} has {len(x)} samples but y_{split} "
                            f"has {labels.size if labels.ndim == 0 else len(labels)} labels")
    if image_size is not None and x_train.ndim == 4:
        x_train, x_test = _resize(x_train, image_size), _resize(x_test, image_size)
    y_train, y_test = _as_labels(y_train, "y_train"), _as_labels(y_test, "y_test")
    names = _check_classes(name, y_train, y_test, class_names)
    x_train, y_train, x_val, y_val = stratified_split(x_train, y_train, val_fraction, seed)
    return Dataset(name, x_train, y_train, x_val, y_val, x_test, y_test, _spec(x_train, names), names)


def _check_classes(name: str, y_train, y_test, class_names: list[str] | None) -> list[str]:
    """The data set's class names (given, or "0".."N-1"), after checking the labels fit them."""
    if len(y_train) == 0 or len(y_test) == 0:
        raise DataError(f"data set '{name}' is empty: {len(y_train)} training and "
                        f"{len(y_test)} test samples")
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    if class_names is not None and len(class_names) < num_classes:
        raise DataError(f"data set '{name}' has labels up to {num_classes - 1} but only {len(class_names)} "
                        f"class names: give one name per class (labels 0..N-1)")
    names = class_names or [str(i) for i in range(num_classes)]
    if len(names) < 2:
        raise DataError(f"data set '{name}' has one class ({names[0]!r}): a classifier needs at least two")
    check_class_names(name, names)
    return names


def _spec(x_train: np.ndarray, names: list[str]) -> dict:
    """The preprocessing spec of raw training samples like ``x_train``."""
    integer_pixels = x_train.dtype == np.uint8
    return {
        "raw_dtype": str(x_train.dtype),
        "scale": 1.0 / 255.0 if integer_pixels else 1.0,
        "mean": None,
        "std": None,
        "input_shape": list(x_train.shape[1:]),
        "layout": "NHWC" if x_train.ndim == 4 else "NF",
        "class_names": names,
    }


def _as_nhwc(x, what: str = "x") -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise DataError(f"{what} must hold numbers, got dtype {x.dtype}")
    if x.ndim < 1:
        raise DataError(f"{what} must be an array of samples, got a scalar")
    if x.ndim == 3:  # (N, H, W) grey images
        x = x[..., None]
    return x


def _as_labels(y, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.mod(y, 1) == 0):
            raise DataError(f"{what} must hold integer class labels, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise DataError(f"{what} has label {int(y.min())}: labels must lie in 0..num_classes-1")
    return y


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    from scipy.ndimage import zoom

    if x.shape[1:3] == (size, size):
        return x
    factors = (size / x.shape[1], size / x.shape[2], 1)
    resized = np.stack([zoom(img.astype(np.float32), factors, order=1) for img in x])
    if x.dtype == np.uint8:
        resized = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
    return resized


def _validate(dataset: Dataset) -> None:
    problems = []
    for which in ("train", "val", "test"):
        x, y = getattr(dataset, f"x_{which}"), getattr(dataset, f"y_{which}")
        if len(x) != len(y):
            problems.append(f"x_{which} has {len(x)} samples but y_{which} has {len(y)}")
        if np.issubdtype(x.dtype, np.floating) and x.size:
            bad = int(np.count_nonzero(~np.isfinite(x)))
            if bad:
                problems.append(f"x_{which} holds {bad} NaN or inf values")
    if dataset.y_test.size and dataset.y_test.max() >= dataset.num_classes:
        problems.append(f"y_test has label {int(dataset.y_test.max())} but the data set has "
                        f"{dataset.num_classes} class names")
    if dataset.x_test.shape[1:] != dataset.x_train.shape[1:]:
        problems.append(f"x_test samples have shape {dataset.x_test.shape[1:]}, x_train "
                        f"samples {dataset.x_train.shape[1:]}")
    if problems:
        raise DataError(f"data set '{dataset.name}': " + "; ".join(problems))


# -- loaders ------------------------------------------------------------------------------

@register_dataset("digits", help="scikit-learn's bundled handwritten digits, at MNIST's 28x28x1 (offline)")
def load_digits(*, seed: int, image_size: int | None, val_fraction: float,
                test_fraction: float) -> Dataset:
    """scikit-learn's 1797 real handwritten 8x8 digits, drawn at MNIST's geometry.

    Like MNIST, each digit fills a 20x20 box centred in a 28x28 frame, as uint8 0..255.
    """
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits as sk_load_digits

    size = image_size or 28
    box = max(1, round(size * 20 / 28))
    bunch = sk_load_digits()
    images = np.stack([zoom(img, box / 8, order=1) for img in bunch.images.astype(np.float32)])
    pad_before = (size - box) // 2
    pad_after = size - box - pad_before
    images = np.pad(images, ((0, 0), (pad_before, pad_after), (pad_before, pad_after)))
    images = np.clip(np.rint(images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    x_train, y_train, x_test, y_test = stratified_split(images, bunch.target, test_fraction, seed)
    return _finish("digits", x_train, y_train, x_test, y_test, seed=seed,
                   val_fraction=val_fraction, image_size=None)


def _keras_download(name: str, loader_name: str, class_names: list[str] | None = None):
    def load(*, seed: int, image_size: int | None, val_fraction: float,
             test_fraction: float) -> Dataset:
        import keras

        try:
            (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, loader_name).load_data()
        except Exception as exc:  # noqa: BLE001 - any download failure reads the same to users
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(
                f"could not download data set '{name}' (offline? {reason[:120]}): put the "
                f"files in ~/.keras/datasets, or pass a local copy with --dataset npz:PATH "
                f"or --dataset idx:DIR") from None
        return _finish(name, x_train, y_train, x_test, y_test, seed=seed,
                       val_fraction=val_fraction, image_size=image_size, class_names=class_names)
    load.__doc__ = f"keras.datasets.{loader_name} (downloaded once, then cached)"
    return load


register_dataset("mnist", help="MNIST through keras.datasets (needs the network once)")(
    _keras_download("mnist", "mnist"))
register_dataset("fashion_mnist", help="Fashion-MNIST through keras.datasets")(
    _keras_download("fashion_mnist", "fashion_mnist",
                    ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                     "sneaker", "bag", "ankle-boot"]))
register_dataset("cifar10", help="CIFAR-10 through keras.datasets")(
    _keras_download("cifar10", "cifar10",
                    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                     "ship", "truck"]))


@register_dataset("npz", takes_path=True, help="an .npz with x_train, y_train, x_test, y_test")
def load_npz(path: str, *, seed: int, image_size: int | None, val_fraction: float,
             test_fraction: float, alloc=None) -> Dataset:
    """A NumPy archive with ``x_train, y_train, x_test, y_test`` (optional ``class_names``)."""
    file = _existing_file(path)
    try:
        with np.load(file, allow_pickle=False) as archive:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in archive]
            if missing:
                raise DataError(f"{file} lacks {', '.join(missing)}: an npz data set needs "
                                f"x_train, y_train, x_test, y_test")
            arrays = {k: archive[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            class_names = [str(c) for c in archive["class_names"]] if "class_names" in archive else None
    except DataError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"{file} is not a readable .npz archive ({exc})") from None
    return _finish(f"npz:{path}", arrays["x_train"], arrays["y_train"], arrays["x_test"],
                   arrays["y_test"], seed=seed, val_fraction=val_fraction,
                   image_size=image_size, class_names=class_names)


@register_dataset("folder", takes_path=True,
                  help="an image folder: one sub-folder per class, or train/ and test/ (and val/) "
                       "each with one sub-folder per class")
def load_image_folder(path: str, *, seed: int, image_size: int | None, val_fraction: float,
                      test_fraction: float, alloc=None) -> Dataset:
    """Images in ``DIR/<class name>/*.png|jpg``, or in ``DIR/train/<class>/`` and
    ``DIR/test/<class>/`` (optional ``DIR/val/<class>/``), which are then the splits;
    resized to ``--image-size`` (default: ``decode_size``'s). Each image is decoded straight
    into its split's array (``alloc(name, shape)`` makes it: in memory, or a file of the
    run's decode cache), so the data set is never held twice."""
    from PIL import Image, UnidentifiedImageError

    scan = scan_image_folder(path)
    y_all = np.array([label for _, label in scan.files], dtype=np.int64)
    index = np.arange(len(scan.files), dtype=np.int64)
    if scan.layout == "splits":
        given = np.array([split for split, _ in scan.file_splits])
        parts = {split: index[given == split] for split in SPLIT_FOLDERS}
        # stored in a seeded random order, not class by class: a streamed epoch's shuffle
        # buffer then only reorders locally
        parts["train"] = np.random.default_rng(seed).permutation(parts["train"])
        if not len(parts["val"]) and val_fraction > 0:
            rest, _, val, _ = stratified_split(parts["train"], y_all[parts["train"]], val_fraction, seed)
            parts["train"], parts["val"] = rest, val
    else:
        rest, y_rest, test, _ = stratified_split(index, y_all, test_fraction, seed)
        train, _, val, _ = stratified_split(rest, y_rest, val_fraction, seed)
        parts = {"train": train, "val": val, "test": test}
    _check_classes(f"folder:{path}", y_all[parts["train"]], y_all[parts["test"]], scan.class_names)
    alloc = alloc or (lambda name, shape: np.empty(shape, dtype=np.uint8))
    try:
        with Image.open(scan.files[0][0]) as first:
            grey = first.mode in GREY_MODES
        size = image_size or decode_size(Image, [f for f, _ in scan.files])
        shape = (size, size, 1) if grey else (size, size, 3)
        decoded = len(scan.files) * int(np.prod(shape))
        if decoded > MAX_DECODED_BYTES:
            raise DataError(f"{scan.root}: {len(scan.files):,} images at {size}×{size} would decode to "
                            f"{decoded:,} bytes, more than {MAX_DECODED_BYTES:,}: pass a smaller --image-size")
        arrays = {split: alloc(f"x_{split}", (len(parts[split]), *shape)) for split in SPLIT_FOLDERS}
        jobs = [(arrays[split], slot, scan.files[i][0]) for split in SPLIT_FOLDERS
                for slot, i in enumerate(parts[split])]
        decode_into(Image, jobs, grey, size)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read an image in {scan.root}: {exc}") from None
    labels = {split: y_all[parts[split]] for split in SPLIT_FOLDERS}
    return Dataset(f"folder:{path}", arrays["train"], labels["train"], arrays["val"], labels["val"],
                   arrays["test"], labels["test"], _spec(arrays["train"], scan.class_names), scan.class_names)


@register_dataset("idx", takes_path=True, help="MNIST-style IDX files (e.g. ../shared/data/mnist)")
def load_idx(path: str, *, seed: int, image_size: int | None, val_fraction: float,
             test_fraction: float, alloc=None) -> Dataset:
    """A directory of IDX files (``*images-idx3-ubyte[.gz]`` + ``*labels-idx1-ubyte[.gz]``).

    With both train and t10k files, those are the splits; with one pair, it is split
    stratified and seeded (``test_fraction`` into test).
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"IDX directory {root} does not exist")
    pairs = {}
    for prefix in ("train", "t10k"):
        images = sorted(root.glob(f"{prefix}*images*idx3*"))
        labels = sorted(root.glob(f"{prefix}*labels*idx1*"))
        if images and labels:
            x, y = read_idx(images[0]), read_idx(labels[0])
            if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
                raise DataError(f"{images[0].name} holds {len(x)} images of shape {x.shape[1:]}, {labels[0].name} "
                                f"{len(y) if y.ndim else 0} labels of shape {y.shape[1:]}: "
                                f"expected one label per image")
            pairs[prefix] = (x, y)
    if not pairs:
        raise DataError(f"{root} holds no IDX image/label pair (*images-idx3-ubyte, *labels-idx1-ubyte)")
    if len(pairs) == 2:
        (x_train, y_train), (x_test, y_test) = pairs["train"], pairs["t10k"]
    else:
        x, y = next(iter(pairs.values()))
        x_train, y_train, x_test, y_test = stratified_split(x, y, test_fraction, seed)
    return _finish(f"idx:{path}", x_train, y_train, x_test, y_test, seed=seed,
                   val_fraction=val_fraction, image_size=image_size)


def _existing_file(path: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise DataError(f"file {file} is not a regular file" if file.exists() else f"file {file} does not exist")
    if not os.access(file, os.R_OK):
        raise DataError(f"file {file} is not readable")
    return file
