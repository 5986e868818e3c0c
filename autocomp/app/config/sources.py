"""Where the model and the data come from: the ``model`` and ``data`` sections."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, field_validator, model_validator

from autocomp.app.config.section import Section
from autocomp.data.load import DATASETS
from autocomp.imports import IMPORT_PATH
from autocomp.settings import OneOf

if TYPE_CHECKING:
    from torch import nn

    from autocomp.data import DataBundle


class ModelConfig(Section):
    """A zoo model (``name``, default resnet20) or the user's own (``factory``: ``package.module:function``).

    With a ``checkpoint`` (a state dict file) the baseline starts from those weights and is not trained.
    """

    name: str | None = None
    factory: str | None = None
    checkpoint: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _zoo_or_factory(cls, values: Any) -> Any:
        if not isinstance(values, Mapping):
            return values
        if values.get("name") is not None and values.get("factory") is not None:
            raise ValueError("give model.name (a zoo model) or model.factory (your own model), not both")
        if values.get("factory") is None and values.get("name") is None:
            return {**values, "name": "resnet20"}
        return values

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str | None) -> str | None:
        from autocomp import models

        if name is not None and name not in models.names():
            raise ValueError(
                f"unknown model {name!r}; allowed: {', '.join(models.names())}, or your own as "
                "model.factory: package.module:function"
            )
        return name

    @field_validator("factory")
    @classmethod
    def _import_path(cls, factory: str | None) -> str | None:
        if factory is not None and not IMPORT_PATH.fullmatch(factory):
            raise ValueError("it must be an import path of the form package.module:function")
        return factory

    @field_validator("kwargs")
    @classmethod
    def _no_data_arguments(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        taken = sorted({"num_classes", "in_channels"} & set(kwargs))
        if taken:
            raise ValueError(f"{taken[0]} comes from the data set and cannot be set here")
        return kwargs

    @property
    def label(self) -> str:
        """The zoo name, or the factory's import path."""
        return self.name or str(self.factory)

    def build(self, num_classes: int, in_channels: int) -> nn.Module:
        """A fresh model as this section describes it, with its initial weights (the checkpoint is not loaded)."""
        from autocomp import models

        if self.factory is not None:
            from autocomp.models.user import build_user_model

            return build_user_model(self.factory, num_classes, in_channels, **self.kwargs)
        return models.create(str(self.name), num_classes=num_classes, in_channels=in_channels, **self.kwargs)


class DataConfig(Section):
    """A built-in data set, an ``image_folder`` (``dir`` holding train/ and test/), or ``factory``: the data sets a
    user's function returns (``factory: package.module:function``, called with ``options``)."""

    name: Annotated[str, OneOf(DATASETS)] = "fashion_mnist"
    dir: str | None = None
    factory: str | None = None
    val_size: int | float = Field(default=5000, gt=0)
    seed: int = 0
    workers: int = Field(default=0, ge=0)
    """DataLoader processes reading a data set that is not in memory (a large image folder, a user's data set); 0:
    this process. Persistent across passes; pinned memory when the device is a GPU."""
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _factory_with_its_name(self) -> DataConfig:
        if (self.name == "factory") != (self.factory is not None):
            raise ValueError("data.factory (package.module:function) goes with data.name factory, and only with it")
        if self.factory is not None and not IMPORT_PATH.fullmatch(self.factory):
            raise ValueError(
                f"data.factory {self.factory!r} must be an import path of the form package.module:function"
            )
        return self

    @property
    def label(self) -> str:
        """The data set's name, or the data factory's import path."""
        return self.factory or self.name

    def load(self) -> DataBundle:
        """The data set this section names, with its held-out split."""
        from autocomp.data import load_dataset

        return load_dataset(
            self.name, data_dir=self.dir, val_size=self.val_size, seed=self.seed, factory=self.factory, **self.options
        )

    def fingerprint(self) -> str:
        """What defines the data beyond this section: an image folder's files (names, sizes, times) or the data
        factory's source file ("" for the built-in sets)."""
        if self.factory is not None:
            from autocomp.imports import source_digest

            return source_digest(self.factory)
        if self.name == "image_folder" and self.dir is not None:
            from autocomp.data.image_folder import folder_fingerprint

            return folder_fingerprint(self.dir)
        return ""
