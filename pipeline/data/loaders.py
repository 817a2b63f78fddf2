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
from pipeline.data.classes import _check_classes, _finish, _spec, stratified_split
from pipeline.data.dataset import Dataset, release  # noqa: F401 - Dataset and release are this module's API too
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
    tasks: tuple[str, ...] = ("classifier",)  # what its labels can be read as
    argument: str = "path"  # what follows "name:" ("digit" for digits-anomaly:N)


_LOADERS: dict[str, DatasetLoader] = {}


def register_dataset(name: str, *, takes_path: bool = False, help: str = "",
                     tasks: tuple[str, ...] = ("classifier",), argument: str = "path"):
    def decorator(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        if name in _LOADERS:
            raise ValueError(f"data set '{name}' is registered twice")
        _LOADERS[name] = DatasetLoader(name, help or (fn.__doc__ or "").strip(), takes_path, fn, tasks, argument)
        return fn
    return decorator


def loaders() -> list[DatasetLoader]:
    """Every registered data set loader, in registration order."""
    return list(_LOADERS.values())


def load_dataset(spec: str = DEFAULT_DATASET, *, seed: int = 0, image_size: int | None = None,
                 val_fraction: float = DEFAULT_VAL_FRACTION,
                 test_fraction: float = DEFAULT_TEST_FRACTION,
                 cache: str | os.PathLike | None = None, write_cache: bool = True,
                 task: str = "classifier") -> Dataset:
    """Load a data set by name (``digits``) or by ``kind:PATH`` (``npz:data.npz``), for a model
    of ``task`` (its labels read as class labels, anomaly labels or regression targets).

    With ``cache`` (a run's ``data_cache`` folder), a classifier's data set given by path is
    decoded once into it and memory-mapped from it afterwards (``pipeline.data.cache``);
    ``write_cache`` False reads a sound entry but writes none (the caller does not hold the
    run's lock)."""
    loader, path = _loader_for(spec)
    if not 0 <= val_fraction < 1 or not 0 < test_fraction < 1:
        raise DataError("validation and test fractions must lie in [0, 1) and (0, 1)")
    _check_task(loader, task)
    kwargs = dict(seed=seed, image_size=image_size, val_fraction=val_fraction,
                  test_fraction=test_fraction)
    if len(loader.tasks) > 1:
        kwargs["task"] = task
    if loader.takes_path and cache is not None and task == "classifier":
        from pipeline.data.cache import cached_load

        dataset = cached_load(Path(cache), spec, loader.load, path, kwargs, writable=write_cache, check=_validate)
    else:
        dataset = loader.load(path, **kwargs) if loader.takes_path else loader.load(**kwargs)
    if task == "reconstruction" and dataset.task == "classifier":
        from pipeline.data.tasks import without_labels

        dataset = without_labels(dataset)  # its class labels say nothing about anomalies
    _validate(dataset)
    return dataset


def check_source(spec: str, task: str = "classifier") -> None:
    """Refuse an unknown data set, one for another task, a missing path or a folder without
    images, before a command creates anything (cheap: no image is decoded)."""
    loader, path = _loader_for(spec)
    _check_task(loader, task)
    if loader.name == "folder":
        scan_image_folder(path)
    elif loader.takes_path and loader.argument == "path" and not Path(path).exists():
        raise DataError(f"data set '{spec}': {path} does not exist")


def dataset_tasks(spec: str) -> tuple[str, ...]:
    """The tasks a data set's labels can be read for (``digits-anomaly``: reconstruction only)."""
    return _loader_for(spec)[0].tasks


def _check_task(loader: DatasetLoader, task: str) -> None:
    if task not in loader.tasks and not (task == "reconstruction" and "classifier" in loader.tasks):
        raise DataError(f"data set '{loader.name}' is for a {' or '.join(loader.tasks)} model, not a {task}: "
                        f"pick a {task} model, or an npz data set with the labels a {task} needs")


def _loader_for(spec: str) -> tuple[DatasetLoader, str]:
    name, _, path = spec.partition(":")
    loader = _LOADERS.get(name)
    if loader is None:
        raise unknown_name("data set", name, _LOADERS)
    if loader.takes_path and not path:
        raise DataError(f"data set '{name}' needs a {loader.argument}: --dataset {name}:{loader.argument.upper()}")
    if not loader.takes_path and path:
        raise DataError(f"data set '{name}' takes no path (got '{spec}')")
    return loader, path


# -- helpers ------------------------------------------------------------------------------

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
    if dataset.task == "classifier" and dataset.y_test.size and dataset.y_test.max() >= dataset.num_classes:
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


@register_dataset("npz", takes_path=True, tasks=("classifier", "reconstruction", "regression"),
                  help="an .npz with x_train, x_test and y_train, y_test (class labels; anomaly labels "
                       "0/1, optional, for an autoencoder; float targets for a regression), optional "
                       "groups_test and preprocessing ('none' or 'standardize')")
def load_npz(path: str, *, seed: int, image_size: int | None, val_fraction: float,
             test_fraction: float, alloc=None, task: str = "classifier") -> Dataset:
    """A NumPy archive with ``x_train, y_train, x_test, y_test`` (optional ``class_names``);
    for an autoencoder the labels are optional, and ``groups_test`` may say which test samples
    come from one recording."""
    file = _existing_file(path)
    needed = ("x_train", "x_test") if task == "reconstruction" else ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(file, allow_pickle=False) as archive:
            missing = [k for k in needed if k not in archive]
            if missing:
                raise DataError(f"{file} lacks {', '.join(missing)}: an npz data set for a {task} model "
                                f"needs {', '.join(needed)}")
            arrays = {k: archive[k] for k in ("x_train", "y_train", "x_test", "y_test", "groups_test")
                      if k in archive}
            class_names = [str(c) for c in archive["class_names"]] if "class_names" in archive else None
            preprocessing = str(archive["preprocessing"]) if "preprocessing" in archive else None
    except DataError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"{file} is not a readable .npz archive ({exc})") from None
    if task != "classifier":
        from pipeline.data.tasks import finish_for_task

        return finish_for_task(f"npz:{path}", task, arrays, seed=seed, val_fraction=val_fraction,
                               preprocessing=preprocessing)
    if "groups_test" in arrays or preprocessing is not None:
        raise DataError(f"{file} has {'groups_test' if 'groups_test' in arrays else 'preprocessing'}, which "
                        f"only an autoencoder's or a regression's data set takes (a classifier's pixels are scaled)")
    return _finish(f"npz:{path}", arrays["x_train"], arrays["y_train"], arrays["x_test"],
                   arrays["y_test"], seed=seed, val_fraction=val_fraction,
                   image_size=image_size, class_names=class_names)


@register_dataset("digits-anomaly", takes_path=True, tasks=("reconstruction",), argument="digit",
                  help="digits as one-class anomaly detection: train on digit N only, test on all "
                       "(label 1 for the other digits), 64-value vectors (offline)")
def load_digits_anomaly(digit: str, *, seed: int, image_size: int | None, val_fraction: float,
                        test_fraction: float) -> Dataset:
    """scikit-learn's 8x8 digits as 64-value vectors: the normal class is digit N."""
    from pipeline.data.tasks import digits_anomaly

    return digits_anomaly(digit, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                          split=stratified_split)


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
