"""scikit-learn's bundled handwritten digits (8 x 8, 10 classes, 1797 images; nothing is downloaded).

The test split is a fixed 20% drawn with `TEST_SEED`, independent of the validation seed. Pixels
(0..16) are scaled to [0, 1] and standardised with the training split's mean and standard deviation.
"""

from __future__ import annotations

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
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise DataError("data set 'digits' needs scikit-learn, which is not installed; install it with "
                        "`pip install scikit-learn` or use fashion_mnist or synthetic.") from None
    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images).float().div_(16).unsqueeze(1)
    labels = torch.from_numpy(bunch.target).long()
    n_test = round(TEST_FRACTION * len(labels))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(TEST_SEED))
    test_index, train_index = order[:n_test], order[n_test:]
    train_images, test_images = standardise(images[train_index], images[test_index])
    return TrainTest(train=TensorDataset(train_images, labels[train_index]),
                     test=TensorDataset(test_images, labels[test_index]), num_classes=NUM_CLASSES)
