"""Images in class folders, as torchvision's ImageFolder reads them: ``ROOT/train/<class>/*.png``, ``ROOT/test/...``.

Classes are the sorted folder names of ``train/`` (a label is its index); ``test/`` may hold fewer
of them, never others. Images are read with Pillow, converted to grey or RGB, resized when asked,
scaled to [0, 1] and standardised by the training images' pixel mean and standard deviation.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from autocomp.data.bundle import TrainTest
from autocomp.data.normalise import standardise
from autocomp.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm")
GREY_MODES = ("1", "L", "LA")
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def load_image_folder(root: str | os.PathLike, image_size: int | list[int] | tuple[int, int] | None = None,
                      channels: int | None = None) -> TrainTest:
    """The images under ``root/train`` and ``root/test`` (see the module docstring).

    ``image_size``: (height, width) or one side for square images, to resize every image to;
    without it all images must share one size. ``channels``: 1 (grey) or 3 (RGB); without it,
    grey when every training image is grey.
    """
    root = Path(root).expanduser()
    size = _size(image_size)
    if channels not in (None, 1, 3) or isinstance(channels, bool):
        raise DataError(f"data option channels={channels!r} is not allowed; use 1 (grey) or 3 (RGB).")
    train_files = _class_files(root, "train", None)
    classes = sorted(train_files)
    if len(classes) < 2:
        raise DataError(f"image folder {root / 'train'} holds {len(classes)} class folder(s); a classifier needs at "
                        "least 2 (one folder of images per class).")
    test_files = _class_files(root, "test", classes)
    mode = {1: "L", 3: "RGB", None: None}[channels] or _common_mode(train_files)
    train_images, train_labels = _read(train_files, classes, mode, size)
    if size is None:
        size = tuple(train_images.shape[2:])
    test_images, test_labels = _read(test_files, classes, mode, size)
    train_images, test_images = standardise(train_images, test_images)
    return TrainTest(train=TensorDataset(train_images, train_labels), test=TensorDataset(test_images, test_labels),
                     num_classes=len(classes))


def _size(image_size: int | list[int] | tuple[int, int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    sides = [image_size] if isinstance(image_size, int) else image_size
    if (not isinstance(sides, (list, tuple)) or len(sides) not in (1, 2)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sides)):
        raise DataError(f"data option image_size={image_size!r} is not allowed; give [height, width] or one side, "
                        "positive integers.")
    return (sides[0], sides[-1])


def _class_files(root: Path, split: str, classes: list[str] | None) -> dict[str, list[Path]]:
    """Each class folder of ``root/split`` with its image files, sorted."""
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist; data.dir must hold train/ and test/, each with one "
                        "folder of images per class.")
    found = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            found[entry.name] = sorted(p for p in entry.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found[entry.name]:
                raise DataError(f"class folder {entry} holds no images (allowed suffixes: {', '.join(IMAGE_SUFFIXES)}).")
    if classes is not None:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(f"test class folder {folder / unknown[0]} has no training folder; allowed classes: "
                            f"{', '.join(classes)}.")
        if not found:
            raise DataError(f"image folder {folder} holds no class folders.")
    return found


def _open(path: Path):  # -> PIL.Image.Image
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"image {path} cannot be read ({type(err).__name__}); remove or replace it.") from None
    return image


def _common_mode(files: dict[str, list[Path]]) -> str:
    """``L`` when every image is grey, else ``RGB``."""
    for paths in files.values():
        for path in paths:
            if _open(path).mode not in GREY_MODES:
                return "RGB"
    return "L"


def _read(files: dict[str, list[Path]], classes: list[str], mode: str, size: tuple[int, int] | None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) float images in [0, 1] and their int64 labels."""
    from PIL import Image

    arrays, labels = [], []
    for name, paths in files.items():
        for path in paths:
            image = _open(path)
            if image.mode in WIDE_MODES:
                raise DataError(f"image {path} has {image.mode!r} pixels (more than 8 bits); autocomp reads 8-bit images: "
                                "convert them, or give them through data.factory.")
            image = (image.convert("RGBA") if "transparency" in image.info else image).convert(mode)
            if size is not None:
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            elif arrays and image.size[::-1] != arrays[0].shape[:2]:
                raise DataError(f"image {path} is {image.size[0]}x{image.size[1]} pixels, unlike the first image "
                                f"({arrays[0].shape[1]}x{arrays[0].shape[0]}); set data.options.image_size to resize them.")
            arrays.append(np.asarray(image, dtype=np.float32).reshape(image.size[1], image.size[0], -1))
            labels.append(classes.index(name))
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous().div_(255)
    return images, torch.tensor(labels, dtype=torch.int64)


def folder_fingerprint(root: str | os.PathLike) -> str:
    """A hash of every image file's path, size and modification time under ``root`` (a changed folder, a new hash)."""
    digest = hashlib.sha256()
    root = Path(root).expanduser()
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
