"""`autocomp dashboard`: optuna-dashboard over a run's study, bound to 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import yaml

from autocomp.app.run_folder import CONFIG_NAME
from autocomp.errors import ConfigError
from autocomp.imports import require
from autocomp.logs import logger

log = logger(__name__)

HOST = "127.0.0.1"


def run_storage(run: Path, storage: str | None = None) -> str:
    """Where ``run``'s study lives: ``storage`` when given, else the storage its config names, else its study.db."""
    if storage is not None:
        return storage
    config = run / CONFIG_NAME
    if config.is_file():
        named = ((yaml.safe_load(config.read_text()) or {}).get("runner") or {}).get("storage")
        if named:
            return named
    for name in ("study.db", "tune.db"):  # a search's run folder, a tuning's folder
        if (run / name).is_file():
            return f"sqlite:///{run / name}"
    raise ConfigError(
        f"{run} holds no study (no study.db, tune.db or runner.storage in its {CONFIG_NAME}); give a "
        "folder of `autocomp search` or `autocomp tune`, or --storage URL."
    )


def serve(run: Path, port: int, storage: str | None = None) -> None:
    """Serve the dashboard for ``run`` on 127.0.0.1:``port`` until interrupted."""
    from autocomp.app.runners.storage import shared_storage

    optuna_dashboard = require("optuna_dashboard", "dashboard", "autocomp dashboard")
    if not 1 <= port <= 65535:
        raise ConfigError(f"port {port} is not allowed; need 1..65535.")
    url = run_storage(run, storage)
    backend = shared_storage(url, heartbeat=60, max_failures=0)
    log.info(f"dashboard: http://{HOST}:{port} (Ctrl-C stops it)")
    optuna_dashboard.run_server(backend, host=HOST, port=port)
