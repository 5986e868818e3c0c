"""Standardising images with the statistics of a training set."""

from __future__ import annotations

import torch


def standardise(train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``train`` and ``others`` shifted and scaled by ``train``'s pixel mean and standard deviation (one each)."""
    mean, std = train.mean(), train.std().clamp_min(1e-8)
    return tuple((images - mean) / std for images in (train, *others))
