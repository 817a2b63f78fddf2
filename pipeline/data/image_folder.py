"""Image folders: which files a folder data set holds and their labels (one sub-folder per
class, or train/ and test/ [and val/] splits of them), and decoding them into uint8 arrays
on every core, with decompression bombs and degenerate images refused."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SPLIT_FOLDERS = ("train", "val", "test")


@dataclass
class FolderScan:
    root: Path
    layout: str  # "classes" (one sub-folder per class) or "splits" (train/ test/ [val/])
    class_names: list[str]
    files: list[tuple[Path, int]]  # every image with its label, in a fixed order
    file_splits: list[tuple[str, int]]  # ("train" | "val" | "test", label) per file, "splits" only


def scan_image_folder(path: str) -> FolderScan:
    """The images of a folder data set and their labels, without reading any image."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
    split_dirs = {name: root / name for name in SPLIT_FOLDERS if (root / name).is_dir()}
    splits = {"train", "test"} <= set(split_dirs) and _class_dirs(split_dirs["train"])
    if not splits:
        class_dirs = _class_dirs(root)
        if not class_dirs:
            raise DataError(f"image folder {root} has no class sub-folders (or train/ and test/ with them)")
        files = [(f, label) for label, d in enumerate(class_dirs) for f in _images(d)]
        if not files:
            raise DataError(f"image folder {root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return FolderScan(root, "classes", [d.name for d in class_dirs], files, [])
    class_names = [d.name for d in _class_dirs(split_dirs["train"])]
    files, file_splits = [], []
    for split, folder in split_dirs.items():
        for d in _class_dirs(folder):
            if d.name not in class_names:
                raise DataError(f"{d} is a class that {split_dirs['train']} does not have: every class of "
                                f"{split}/ needs training images")
            label = class_names.index(d.name)
            for f in _images(d):
                files.append((f, label))
                file_splits.append(split)
    for split in ("train", "test"):
        if split not in file_splits:
            raise DataError(f"{split_dirs[split]} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return FolderScan(root, "splits", class_names, files, list(zip(file_splits, (label for _, label in files))))


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir())


def _images(folder: Path) -> list[Path]:
    """The image files of a class folder; one that is not a regular file (a FIFO, a device, a
    socket) is refused before anything opens it (opening a FIFO waits for a writer)."""
    images = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    for file in images:
        try:
            regular = stat.S_ISREG(os.stat(file).st_mode)
        except OSError as exc:
            raise DataError(f"cannot read {file}: {exc.strerror}") from None
        if not regular:
            raise DataError(f"{file} is not a regular file (a FIFO, a device or a folder): remove it "
                            f"from the data set")
    return images


# Without --image-size, images decode at the median shorter side of up to SIZE_SAMPLE of them
# (evenly spread over the folder), at most MAX_DEFAULT_IMAGE_SIZE: one image of extreme aspect
# or size does not decide it. Every folder's decoded bytes are bounded up front.
SIZE_SAMPLE = 256
MAX_DEFAULT_IMAGE_SIZE = 256
MAX_DECODED_BYTES = 8 << 30


def decode_size(Image, files: list[Path]) -> int:
    """The side every image is resized to when the user gives none (headers only are read)."""
    chosen = files if len(files) <= SIZE_SAMPLE else [
        files[i] for i in np.linspace(0, len(files) - 1, SIZE_SAMPLE).astype(int)]
    sides = []
    for file in chosen:
        with Image.open(file) as image:
            sides.append(min(image.size))
    return int(max(MIN_IMAGE_SIDE, min(MAX_DEFAULT_IMAGE_SIZE, np.median(sides))))


def decode_into(Image, jobs, grey: bool, size: int) -> None:
    """Decode each ``(array, slot, file)`` into ``array[slot]``, on every core (Pillow
    releases the GIL while it decodes); the first failure is raised."""
    from concurrent.futures import ThreadPoolExecutor

    def decode(job):
        array, slot, file = job
        array[slot] = _read_image(Image, file, grey, size).reshape(array.shape[1:])

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(jobs), 4096):  # in blocks: the first bad image stops it soon
            list(pool.map(decode, jobs[start:start + 4096]))


# Pillow modes of one channel; every other mode (RGB, RGBA, P, CMYK, ...) becomes RGB.
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
MAX_IMAGE_PIXELS = 4096 * 4096  # a larger image in a training folder is a decompression bomb
MIN_IMAGE_SIDE = 4


def _read_image(Image, file: Path, grey: bool, size: int) -> np.ndarray:
    """One image as uint8 ``size``×``size`` (grey or RGB): 16-bit and float images scaled to
    0..255 (not clipped), palette and alpha images converted; bombs and tiny images refused."""
    with Image.open(file) as image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ValueError(f"{file.name} is {width}×{height} pixels, more than {MAX_IMAGE_PIXELS:,}")
        if min(width, height) < MIN_IMAGE_SIDE:
            raise ValueError(f"{file.name} is {width}×{height} pixels: images must be at least "
                             f"{MIN_IMAGE_SIDE}×{MIN_IMAGE_SIDE}")
        if image.mode.startswith("I") or image.mode == "F":  # 16/32-bit integer or float grey
            values = np.asarray(image, dtype=np.float64)
            top = 1.0 if image.mode == "F" and values.max(initial=0) <= 1.0 else (
                65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0)
            image = Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8), "L")
        if grey and image.mode != "L":
            image = image.convert("L")
        elif not grey and image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image.resize((size, size)))
