"""A learnable random data set: each class is a fixed random prototype image plus Gaussian noise.

Everything is drawn from one seed: the prototypes (standard normal pixels), then the training
examples, then the test examples. Labels are balanced. With the default noise of 1.0 a small CNN
learns it well above chance. Images are standardised with the training set's mean and deviation.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch.utils.data import TensorDataset

from autocomp.data.bundle import TrainTest
from autocomp.data.normalise import standardise
from autocomp.errors import DataError


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise DataError(f"synthetic option {name} must be an integer of at least {minimum}, not {value!r}.")
    return int(value)


def _image_size(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise DataError(f"synthetic option image_size must be one integer or a pair (H, W), not {value!r}.")
        return _positive_int("image_size", value[0]), _positive_int("image_size", value[1])
    side = _positive_int("image_size", value)
    return side, side


def make_synthetic(
    seed: int = 0,
    *,
    n_train: int = 512,
    n_test: int = 256,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int | Sequence[int] = 16,
    noise: float = 1.0,
) -> TrainTest:
    """The synthetic data set of ``seed``: the same seed gives the same tensors, another seed other ones."""
    n_train, n_test = _positive_int("n_train", n_train), _positive_int("n_test", n_test)
    num_classes = _positive_int("num_classes", num_classes, minimum=2)
    shape = (_positive_int("in_channels", in_channels), *_image_size(image_size))
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not 0 <= noise < float("inf"):
        raise DataError(f"synthetic option noise must be a finite number of at least 0, not {noise!r}.")
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(num_classes, *shape, generator=generator)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=generator)]
        return prototypes[labels] + float(noise) * torch.randn(n, *shape, generator=generator), labels

    (train_images, train_labels), (test_images, test_labels) = sample(n_train), sample(n_test)
    train_images, test_images = standardise(train_images, test_images)
    return TrainTest(
        train=TensorDataset(train_images, train_labels),
        test=TensorDataset(test_images, test_labels),
        num_classes=num_classes,
    )
