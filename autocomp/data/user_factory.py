"""Data from a user's function (``data.factory: package.module:function``), read as it comes.

The function is called with ``data.options`` and returns ``(train, test)`` or ``(train, test,
num_classes)``: torch data sets (map-style, or iterable with a length) of ``(image, label)`` pairs,
images C x H x W tensors of one shape, or DataLoaders over such data sets (autocomp batches and
shuffles their data set itself, with its seeded order and ``data.workers``). A `TensorDataset` is
kept in memory; any other data set is read through a DataLoader when batches are needed, never
copied. Nothing is normalised here: the function applies its own transforms.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any, cast

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from autocomp.data.bundle import TrainTest
from autocomp.errors import DataError
from autocomp.imports import import_object


def load_data_factory(path: str, **options: Any) -> TrainTest:
    """The training and test sets ``path``'s function returns (see the module docstring)."""
    function = import_object(path, "data.factory")
    if not callable(function):
        raise DataError(f"data.factory {path!r} names {type(function).__name__} object, not a function.")
    returned = function(**options)
    if not isinstance(returned, tuple) or len(returned) not in (2, 3):
        raise DataError(
            f"data.factory {path!r} returned {type(returned).__name__}; it must return (train, test) or "
            "(train, test, num_classes)."
        )
    train = _dataset(returned[0], path, "training set")
    test = _dataset(returned[1], path, "test set")
    train_shape, test_shape = (
        _first_image(train, path, "training set").shape,
        _first_image(test, path, "test set").shape,
    )
    if train_shape != test_shape:
        raise DataError(
            f"data.factory {path!r} returned training images of shape {list(train_shape)} and test "
            f"images of shape {list(test_shape)}; they must match."
        )
    num_classes = returned[2] if len(returned) == 3 else None
    labels = [_labels(part, read=num_classes is None) for part in (train, test)]
    known = [part for part in labels if part is not None]
    if num_classes is None:
        if len(known) < 2:
            raise DataError(
                f"data.factory {path!r} returned an iterable data set without the class count; return "
                "(train, test, num_classes)."
            )
        num_classes = int(torch.cat(known).max()) + 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise DataError(f"data.factory {path!r} gives {num_classes!r} classes; a classifier needs an integer >= 2.")
    if known:
        every = torch.cat(known)
        bad = int(every.min()) if int(every.min()) < 0 else int(every.max())
        if not 0 <= bad < num_classes:
            raise DataError(f"data.factory {path!r} returned label {bad}; labels must lie in [0, {num_classes}).")
    return TrainTest(train=train, test=test, num_classes=num_classes)


def _dataset(data: object, path: str, what: str) -> Dataset:
    """The data set ``data`` is, or holds (a DataLoader's); in-memory tensors as float32 images and int64 labels."""
    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        images, labels = data.tensors
        if images.dim() != 4 or len(images) == 0:
            raise DataError(
                f"data.factory {path!r} returned {what} images of shape {list(images.shape[1:])}; each must "
                "be C x H x W."
            )
        return TensorDataset(images.float(), labels.long().reshape(-1))
    if isinstance(data, IterableDataset) or (isinstance(data, Dataset) and hasattr(data, "__len__")):
        try:
            length = len(data)
        except TypeError:
            raise DataError(
                f"data.factory {path!r} returned an iterable {what} without a length; define __len__ "
                "(its examples per epoch)."
            ) from None
        if length == 0:
            raise DataError(f"data.factory {path!r} returned an empty {what}.")
        return data
    raise DataError(
        f"data.factory {path!r} returned a {what} of type {type(data).__name__}; it must be a torch.utils.data "
        "Dataset (or DataLoader) of (image, label) pairs."
    )


def _first_image(data: Dataset, path: str, what: str) -> torch.Tensor:
    """The first example's image, checked to be a C x H x W tensor with a label beside it."""
    first = next(iter(data)) if isinstance(data, IterableDataset) else data[0]
    if not (isinstance(first, (tuple, list)) and len(first) == 2 and isinstance(first[0], torch.Tensor)):
        raise DataError(f"data.factory {path!r} returned a {what} whose items are not (image tensor, label) pairs.")
    if first[0].dim() != 3:
        raise DataError(
            f"data.factory {path!r} returned {what} images of shape {list(first[0].shape)}; each must be C x H x W."
        )
    return first[0]


def _labels(data: Dataset, read: bool) -> torch.Tensor | None:
    """Every label of ``data`` when it is known without decoding (tensors, ``targets``), else read item by item when
    ``read`` (the class count is needed), else None."""
    if isinstance(data, TensorDataset):
        return data.tensors[1]
    targets = getattr(data, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets).long().reshape(-1)
    if not read or isinstance(data, IterableDataset):
        return None
    return torch.tensor([int(data[i][1]) for i in range(len(cast(Sized, data)))])
