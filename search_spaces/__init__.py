"""What may be decided, and under which budget."""

from search_spaces.constraints import Constraint
from search_spaces.dims import PruneRatio
from search_spaces.space import Decision, Space

__all__ = ["Constraint", "Decision", "PruneRatio", "Space"]
