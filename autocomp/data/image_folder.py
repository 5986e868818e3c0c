"""Images in class folders, as torchvision's ImageFolder reads them: ``ROOT/train/<class>/*.png``, ``ROOT/test/...``.

Classes are the sorted folder names of ``train/`` (a label is its index); ``test/`` may hold fewer
of them, never others. Images are read with Pillow, converted to grey or RGB, resized when asked,
scaled to [0, 1] and standardised by the pixel mean and standard deviation of the training images
(of a seeded sample of `STATS_IMAGES` of them when there are more).

A folder whose decoded training images fit in `IN_MEMORY_BYTES` is decoded once and kept in memory;
a larger one (or one with ``augment``) is an `ImageFolderData` that decodes each image when it is read,
so memory does not grow with the folder. Both decode the same way and give the same tensors.

Evaluation view: resized to ``image_size`` (``crop`` < 1: the shorter side to ``image_size / crop``,
then the centre ``image_size`` cut out, as ImageNet models are evaluated at 0.875). Training view with
``augment``: a random resized crop (8-100% of the area, aspect 3/4-4/3) and a horizontal flip, drawn from
the key's seed so an epoch is the same whenever it is read.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from autocomp.data.bundle import TrainTest
from autocomp.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm")
GREY_MODES = ("1", "L", "LA")
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
IMAGE_FOLDER_OPTIONS = ("image_size", "channels", "augment", "crop", "in_memory")
STATS_IMAGES = 1000
"""Training images the pixel mean and standard deviation are computed from (all of them when there are fewer)."""
STATS_SEED = 0
IN_MEMORY_BYTES = 1 << 30
"""A folder whose decoded float32 training images take at most this much is kept in memory (unless told otherwise)."""
CROP_SCALE, CROP_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)
Sample = tuple[Path, int]


def load_image_folder(
    root: str | os.PathLike,
    image_size: int | list[int] | tuple[int, int] | None = None,
    channels: int | None = None,
    augment: bool = False,
    crop: float = 1.0,
    in_memory: bool | None = None,
) -> TrainTest:
    """The images under ``root/train`` and ``root/test`` (see the module docstring).

    ``image_size``: (height, width) or one side for square images, to resize every image to;
    without it all images must share one size. ``channels``: 1 (grey) or 3 (RGB); without it,
    grey when every training image is grey. ``augment``: random resized crops and flips for training.
    ``crop``: the centre fraction evaluation keeps, in (0, 1]. ``in_memory``: decode everything once
    (True), decode each image when read (False), or decide by size (None).
    """
    root = Path(root).expanduser()
    size = _size(image_size)
    if channels not in (None, 1, 3) or isinstance(channels, bool):
        raise DataError(f"data option channels={channels!r} is not allowed; use 1 (grey) or 3 (RGB).")
    for name, flag in (("augment", augment), ("in_memory", in_memory)):
        if not isinstance(flag, bool) and not (name == "in_memory" and flag is None):
            raise DataError(f"data option {name}={flag!r} is not allowed; use true or false.")
    if isinstance(crop, bool) or not isinstance(crop, (int, float)) or not 0 < crop <= 1:
        raise DataError(f"data option crop={crop!r} is not allowed; give the centre fraction kept, in (0, 1].")
    if augment and in_memory:
        raise DataError(
            "data options augment and in_memory exclude each other: augmentation draws new crops every "
            "epoch; set in_memory false (or leave it unset)."
        )
    if (augment or crop < 1) and size is None:
        raise DataError(
            "data options augment and crop need data.options.image_size, the size the crops are resized to."
        )
    classes, train_samples = _class_files(root, "train", None)
    _, test_samples = _class_files(root, "test", classes)
    mode = {1: "L", 3: "RGB", None: None}[channels] or _common_mode(train_samples)
    if size is None:
        size = _common_size(train_samples + test_samples)
    plain = ImageFolderData(train_samples, mode, size, crop)
    mean, std = _statistics(plain)
    train = ImageFolderData(train_samples, mode, size, crop, mean, std, augment)
    test = ImageFolderData(test_samples, mode, size, crop, mean, std)
    keep = (
        in_memory
        if in_memory is not None
        else (not augment and len(train_samples) * math.prod(train.image_shape) * 4 <= IN_MEMORY_BYTES)
    )
    if keep:
        return TrainTest(train=_decoded(train), test=_decoded(test), num_classes=len(classes))
    held_out_view = ImageFolderData(train_samples, mode, size, crop, mean, std) if augment else None
    return TrainTest(train=train, test=test, num_classes=len(classes), held_out_view=held_out_view)


class ImageFolderData(Dataset):
    """Image files and their labels, decoded when read: (float32 C x H x W image, int64 label).

    Keys are an index, or (index, seed) for a training view that augments (the seed draws its crop and flip).
    Without ``mean``/``std`` pixels are in [0, 1]."""

    def __init__(
        self,
        samples: list[Sample],
        mode: str,
        size: tuple[int, int],
        crop: float = 1.0,
        mean: float = 0.0,
        std: float = 1.0,
        augment: bool = False,
    ) -> None:
        self.samples, self.mode, self.size, self.crop = samples, mode, size, crop
        self.mean, self.std = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        self.augment = augment

    @property
    def autocomp_augments(self) -> bool:
        """Whether keys carry an augmentation seed (`autocomp.data.batching.AUGMENTS`)."""
        return self.augment

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1 if self.mode == "L" else 3, *self.size)

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        path, label = self.samples[index]
        image = _open(path)
        if image.mode in WIDE_MODES:
            raise DataError(
                f"image {path} has {image.mode!r} pixels (more than 8 bits); autocomp reads 8-bit images: "
                "convert them, or give them through data.factory."
            )
        image = (image.convert("RGBA") if "transparency" in image.info else image).convert(self.mode)
        image = _augmented(image, self.size, seed) if self.augment else _evaluated(image, self.size, self.crop, path)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).reshape(image.size[1], image.size[0], -1))
        pixels = pixels.permute(2, 0, 1).contiguous().div_(255)
        return (pixels - self.mean) / self.std, label


def _evaluated(image, size: tuple[int, int], crop: float, path: Path):  # PIL.Image.Image -> PIL.Image.Image
    """``image`` at ``size``: resized (crop 1), or its shorter side to size / crop and the centre cut out."""
    from PIL import Image

    height, width = size
    if crop == 1:
        if image.size == (width, height):
            return image
        return image.resize((width, height), Image.Resampling.BILINEAR)
    scale = max(height / crop / image.size[1], width / crop / image.size[0])
    scaled = image.resize(
        (max(width, round(image.size[0] * scale)), max(height, round(image.size[1] * scale))), Image.Resampling.BILINEAR
    )
    left, top = (scaled.size[0] - width) // 2, (scaled.size[1] - height) // 2
    return scaled.crop((left, top, left + width, top + height))


def _augmented(image, size: tuple[int, int], seed: int):  # PIL.Image.Image -> PIL.Image.Image
    """A random resized crop of ``image`` at ``size``, flipped half the time, drawn from ``seed`` (as torchvision's
    RandomResizedCrop and RandomHorizontalFlip)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = image.size
    area = width * height
    box = None
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            box = (left, top, left + w, top + h)
            break
    if box is None:  # the centre, at the nearest allowed aspect
        ratio = min(max(width / height, CROP_RATIO[0]), CROP_RATIO[1])
        w, h = (width, round(width / ratio)) if width / height < ratio else (round(height * ratio), height)
        box = ((width - w) // 2, (height - h) // 2, (width - w) // 2 + w, (height - h) // 2 + h)
    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR, box=box)
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image


def _statistics(plain: ImageFolderData) -> tuple[float, float]:
    """Pixel mean and standard deviation (float64 sums) of a seeded sample of `STATS_IMAGES` training images."""
    count = len(plain)
    picked = (
        range(count)
        if count <= STATS_IMAGES
        else sorted(torch.randperm(count, generator=torch.Generator().manual_seed(STATS_SEED))[:STATS_IMAGES].tolist())
    )
    total = squares = 0.0
    pixels = 0
    for index in picked:
        image = plain[index][0].numpy().astype(np.float64)
        total, squares, pixels = total + image.sum(), squares + np.square(image).sum(), pixels + image.size
    mean = total / pixels
    variance = max(0.0, (squares - pixels * mean * mean) / max(1, pixels - 1))
    return mean, max(math.sqrt(variance), 1e-8)


def _decoded(data: ImageFolderData) -> TensorDataset:
    """Every image of ``data`` decoded into one tensor (the in-memory form)."""
    images = torch.empty(len(data), *data.image_shape)
    for index in range(len(data)):
        images[index] = data[index][0]
    return TensorDataset(images, torch.tensor(data.targets, dtype=torch.int64))


def _size(image_size: int | list[int] | tuple[int, int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    sides = [image_size] if isinstance(image_size, int) else image_size
    if (
        not isinstance(sides, (list, tuple))
        or len(sides) not in (1, 2)
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sides)
    ):
        raise DataError(
            f"data option image_size={image_size!r} is not allowed; give [height, width] or one side, "
            "positive integers."
        )
    return (sides[0], sides[-1])


def _class_files(root: Path, split: str, classes: list[str] | None) -> tuple[list[str], list[Sample]]:
    """The class names of ``root/split`` (``classes`` when given) and its image files with their labels, sorted."""
    folder = root / split
    if not folder.is_dir():
        raise DataError(
            f"image folder {folder} does not exist; data.dir must hold train/ and test/, each with one "
            "folder of images per class."
        )
    found = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            found[entry.name] = sorted(p for p in entry.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found[entry.name]:
                raise DataError(
                    f"class folder {entry} holds no images (allowed suffixes: {', '.join(IMAGE_SUFFIXES)})."
                )
    if classes is None:
        classes = sorted(found)
        if len(classes) < 2:
            raise DataError(
                f"image folder {folder} holds {len(classes)} class folder(s); a classifier needs at "
                "least 2 (one folder of images per class)."
            )
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(
                f"test class folder {folder / unknown[0]} has no training folder; allowed classes: "
                f"{', '.join(classes)}."
            )
        if not found:
            raise DataError(f"image folder {folder} holds no class folders.")
    return classes, [(path, classes.index(name)) for name, paths in found.items() for path in paths]


def _open(path: Path, header_only: bool = False):  # -> PIL.Image.Image
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        if not header_only:
            image.load()
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"image {path} cannot be read ({type(err).__name__}); remove or replace it.") from None
    return image


def _common_mode(samples: list[Sample]) -> str:
    """``L`` when every image is grey, else ``RGB`` (from the files' headers)."""
    for path, _ in samples:
        if _open(path, header_only=True).mode not in GREY_MODES:
            return "RGB"
    return "L"


def _common_size(samples: list[Sample]) -> tuple[int, int]:
    """(height, width) every image shares (from the files' headers); `DataError` naming the first that differs."""
    first = _open(samples[0][0], header_only=True).size
    for path, _ in samples[1:]:
        size = _open(path, header_only=True).size
        if size != first:
            raise DataError(
                f"image {path} is {size[0]}x{size[1]} pixels, unlike the first image ({first[0]}x{first[1]});"
                " set data.options.image_size to resize them."
            )
    return first[1], first[0]


def folder_fingerprint(root: str | os.PathLike) -> str:
    """A hash of every image file's path, size and modification time under ``root`` (a changed folder, a new hash)."""
    digest = hashlib.sha256()
    root = Path(root).expanduser()
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
