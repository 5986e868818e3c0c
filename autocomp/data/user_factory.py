"""Data from a user's function (``data.factory: package.module:function``), kept in memory as it comes.

The function is called with ``data.options`` and returns ``(train, test)`` or ``(train, test,
num_classes)``: map-style data sets of ``(image, label)`` pairs, images C x H x W tensors of one
shape. Nothing is normalised here: the function applies its own transforms.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from autocomp.data.bundle import TrainTest
from autocomp.errors import DataError
from autocomp.imports import import_object


def load_data_factory(path: str, **options: Any) -> TrainTest:
    """The training and test sets ``path``'s function returns, as tensors (see the module docstring)."""
    function = import_object(path, "data.factory")
    if not callable(function):
        raise DataError(f"data.factory {path!r} names {type(function).__name__} object, not a function.")
    returned = function(**options)
    if not isinstance(returned, tuple) or len(returned) not in (2, 3):
        raise DataError(f"data.factory {path!r} returned {type(returned).__name__}; it must return (train, test) or "
                        "(train, test, num_classes).")
    train = _tensors(returned[0], path, "training set")
    test = _tensors(returned[1], path, "test set")
    if train[0].shape[1:] != test[0].shape[1:]:
        raise DataError(f"data.factory {path!r} returned training images of shape {list(train[0].shape[1:])} and test "
                        f"images of shape {list(test[0].shape[1:])}; they must match.")
    labels = torch.cat([train[1], test[1]])
    num_classes = returned[2] if len(returned) == 3 else int(labels.max()) + 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise DataError(f"data.factory {path!r} gives {num_classes!r} classes; a classifier needs an integer >= 2.")
    bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
    if not 0 <= bad < num_classes:
        raise DataError(f"data.factory {path!r} returned label {bad}; labels must lie in [0, {num_classes}).")
    return TrainTest(train=TensorDataset(*train), test=TensorDataset(*test), num_classes=num_classes)


def _tensors(data: object, path: str, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) float32 images and int64 labels of a data set of (image, label) pairs."""
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        images, labels = data.tensors
    elif isinstance(data, Dataset) and hasattr(data, "__len__"):
        if len(data) == 0:
            raise DataError(f"data.factory {path!r} returned an empty {what}.")
        pairs = [data[i] for i in range(len(data))]
        if not all(isinstance(p, (tuple, list)) and len(p) == 2 and isinstance(p[0], torch.Tensor) for p in pairs):
            raise DataError(f"data.factory {path!r} returned a {what} whose items are not (image tensor, label) pairs.")
        shapes = {tuple(p[0].shape) for p in pairs}
        if len(shapes) > 1:
            raise DataError(f"data.factory {path!r} returned a {what} with images of {len(shapes)} shapes "
                            f"(for example {sorted(shapes)[:2]}); resize them to one.")
        images = torch.stack([p[0] for p in pairs])
        labels = torch.tensor([int(p[1]) for p in pairs])
    else:
        raise DataError(f"data.factory {path!r} returned a {what} of type {type(data).__name__}; it must be a map-style "
                        "torch.utils.data.Dataset of (image, label) pairs.")
    if images.dim() != 4 or len(images) == 0:
        raise DataError(f"data.factory {path!r} returned {what} images of shape {list(images.shape[1:])}; each must be "
                        "C x H x W.")
    return images.float(), labels.long().reshape(-1)
