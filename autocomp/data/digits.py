"""scikit-learn's bundled handwritten digits (8 x 8, 10 classes, 1797 images; nothing is downloaded).

The file scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``: 64 pixels and the label per
row) is read directly: importing scikit-learn would take 1.5-2 s of every process that loads digits.

The test split is a fixed 20% drawn with `TEST_SEED`, independent of the validation seed. Pixels
(0..16) are scaled to [0, 1] and standardised with the training split's mean and standard deviation.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from autocomp.data.bundle import TrainTest
from autocomp.data.normalise import standardise
from autocomp.errors import DataError

TEST_FRACTION = 0.2
TEST_SEED = 1797
NUM_CLASSES = 10


def load_digits() -> TrainTest:
    """The digits' training split (1438 images) and test split (359 images), one channel each."""
    images, labels = _read_bundled_file()
    n_test = round(TEST_FRACTION * len(labels))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(TEST_SEED))
    test_index, train_index = order[:n_test], order[n_test:]
    train_images, test_images = standardise(images[train_index], images[test_index])
    return TrainTest(
        train=TensorDataset(train_images, labels[train_index]),
        test=TensorDataset(test_images, labels[test_index]),
        num_classes=NUM_CLASSES,
    )


def _read_bundled_file() -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N x 1 x 8 x 8, pixels in [0, 1]) and labels from scikit-learn's file, without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    locations = spec.submodule_search_locations if spec else None
    path = Path(locations[0]) / "datasets" / "data" / "digits.csv.gz" if locations else None
    if path is None or not path.is_file():
        raise DataError(
            "data set 'digits' needs scikit-learn, which is not installed; install it with "
            "`pip install scikit-learn` or use fashion_mnist or synthetic."
        )
    rows = torch.from_numpy(np.loadtxt(path, delimiter=",", dtype=np.float32))
    return rows[:, :-1].div(16).reshape(-1, 1, 8, 8), rows[:, -1].long()
