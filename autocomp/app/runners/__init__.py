"""How a search's candidates get evaluated: locally, on a Ray cluster, or by workers sharing one Optuna study."""
