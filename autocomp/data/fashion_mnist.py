"""Fashion-MNIST (Xiao et al. 2017) from its four IDX files, raw or gzip-compressed.

The files are looked for in an explicit folder only when one is given, else in ``$AUTOCOMP_DATA``,
``$AUTOCOMP_DATA/fashion-mnist`` and ``/usr/share/datasets/fashion-mnist`` (where Debian's
``dataset-fashion-mnist`` package installs them). Images are scaled to [0, 1] and standardised with
the training set's fixed mean and standard deviation, `MEAN` and `STD`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from autocomp.data.bundle import TrainTest
from autocomp.data.idx import read_idx
from autocomp.errors import DataError

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SYSTEM_FOLDER = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "AUTOCOMP_DATA"
MEAN, STD = 0.2860, 0.3530
NUM_CLASSES = 10
IMAGE_SIZE = (28, 28)


def candidate_folders(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched, in order: ``data_dir`` alone if given, else the environment's and the system's."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    env = os.environ.get(ENV_VAR)
    folders = [Path(env).expanduser(), Path(env).expanduser() / "fashion-mnist"] if env else []
    return [*folders, SYSTEM_FOLDER]


def _idx_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or else ``folder/name.gz``, whichever exists first; None when neither does."""
    return next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)


def _found_idx_file(folder: Path, name: str) -> Path:
    """`_idx_file` in a folder `find_fashion_mnist` found complete."""
    path = _idx_file(folder, name)
    if path is None:
        raise DataError(f"{folder} holds no {name} (raw or .gz); it needs all four Fashion-MNIST IDX files.")
    return path


def find_fashion_mnist(data_dir: str | os.PathLike | None = None) -> Path:
    """The first of `candidate_folders` that holds all four Fashion-MNIST IDX files."""
    looked = []
    for folder in candidate_folders(data_dir):
        if not folder.is_dir():
            looked.append(f"{folder} (no such folder)")
            continue
        missing = [name for name in FILES if _idx_file(folder, name) is None]
        if not missing:
            return folder
        looked.append(f"{folder} (lacks {', '.join(missing)})")
    raise DataError(
        f"Fashion-MNIST not found, looked in: {'; '.join(looked)}; install it with "
        f"`apt-get install dataset-fashion-mnist`, or put the four IDX files ({', '.join(FILES)}, "
        f"raw or .gz) in a folder and set {ENV_VAR} to it or data.dir in the config (--set data.dir=FOLDER)."
    )


def _load_part(folder: Path, prefix: str) -> TensorDataset:
    """The images and labels of one split (``train`` or ``t10k``), checked against each other."""
    images_path = _found_idx_file(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = _found_idx_file(folder, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != IMAGE_SIZE:
        raise DataError(
            f"{images_path} holds an array of shape {images.shape}; Fashion-MNIST images must be "
            f"N x {IMAGE_SIZE[0]} x {IMAGE_SIZE[1]}."
        )
    if labels.ndim != 1:
        raise DataError(f"{labels_path} holds an array of shape {labels.shape}; Fashion-MNIST labels must be 1-D.")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            f"both files must come from the same download."
        )
    if len(labels) and labels.max() >= NUM_CLASSES:
        raise DataError(f"{labels_path} holds label {labels.max()}; Fashion-MNIST labels are 0..{NUM_CLASSES - 1}.")
    pixels = torch.from_numpy(images.astype(np.float32)).unsqueeze(1)
    pixels.mul_(1 / (255 * STD)).sub_(MEAN / STD)
    return TensorDataset(pixels, torch.from_numpy(labels.astype(np.int64)))


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> TrainTest:
    """Fashion-MNIST's training and test sets (60000 and 10000 examples in the official files)."""
    folder = find_fashion_mnist(data_dir)
    return TrainTest(train=_load_part(folder, "train"), test=_load_part(folder, "t10k"), num_classes=NUM_CLASSES)
