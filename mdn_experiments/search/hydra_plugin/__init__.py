"""Installed as `hydra_plugins.mdn_experiments_search` (pyproject's package-dir): Hydra builds a
sweeper only from a class under `hydra_plugins.`, so the search's sweeper is named here; its code
lives in `mdn_experiments.search.sweeper`. Importing this module imports neither optuna nor torch."""

from mdn_experiments.search.sweeper import SearchSweeper as _Sweeper


class SearchSweeper(_Sweeper):
    """The validation-only search (mdn_experiments.search.sweeper.SearchSweeper), under the name Hydra accepts."""
