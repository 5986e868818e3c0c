"""Errors a user can cause. Each carries one sentence that names the bad value and what is allowed."""


class AutocompError(Exception):
    """Base class of every error autocomp raises on purpose."""


class ConfigError(AutocompError, ValueError):
    """A configuration value, file or argument is not allowed (the CLI exits with code 2)."""


class DataError(ConfigError):
    """A data set is missing or corrupt; the message says where autocomp looked and how to get it."""


class InfeasibleError(AutocompError):
    """The budget cannot be met by any policy of the search space."""


class SearchError(AutocompError):
    """A search ended without a result: none of its candidates could be evaluated."""
