"""What every config section shares: unknown keys refused, values frozen, no NaN or infinity."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Section(BaseModel):
    """A config section of the application's own settings (the library's are its settings dataclasses)."""

    model_config = STRICT
