"""What may be decided, and under which budget."""

from search_spaces.constraints import Budget, Constraint
from search_spaces.dims import (
    BitWidth,
    LowRank,
    PruneRatio,
    Resolution,
    WidthMultiplier,
)
from search_spaces.metrics import AFFECTED_BY, METRICS
from search_spaces.projection import (
    FILL_TARGET,
    largest_feasible,
    largest_where,
    project,
    scaled,
)
from search_spaces.space import GROUPINGS, Axis, Decision, Space, resolve_frozen, stages

__all__ = [
    "AFFECTED_BY",
    "FILL_TARGET",
    "GROUPINGS",
    "METRICS",
    "Axis",
    "BitWidth",
    "Budget",
    "Constraint",
    "Decision",
    "LowRank",
    "PruneRatio",
    "Resolution",
    "Space",
    "WidthMultiplier",
    "largest_feasible",
    "largest_where",
    "project",
    "resolve_frozen",
    "scaled",
    "stages",
]
