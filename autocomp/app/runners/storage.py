"""Shared study storages: checked before anything is written (driver importable, server answering) and patient
through an outage (a restarting database server), for the processes that share one study."""

from __future__ import annotations

import functools
import random
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend

from autocomp.errors import ConfigError, error_chain
from autocomp.logs import logger

log = logger(__name__)


def check_storage(url: str | None) -> None:
    """Refuse a shared storage (``runner.storage``, ``--storage``) before anything is written or trained: a database URL
    whose driver is not installed or whose server does not answer (None, a journal file path: nothing to check)."""
    if url is None or "://" not in url:
        return
    import sqlalchemy

    _check_driver(url)
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as error:
        raise ConfigError(
            f"cannot reach the study storage {safe_url(url)}: {_reason(error)}; check that it is "
            "up and the URL right, or give another storage."
        ) from None
    finally:
        engine.dispose()


def shared_storage(url: str, heartbeat: int, max_failures: int) -> optuna.storages.BaseStorage:
    """The storage many workers share: an SQLAlchemy URL (postgresql://..., sqlite:///...) with heartbeats, a trial
    silent for 4 beats failed and enqueued again up to ``max_failures`` times, every operation waiting out an outage
    (`PatientRDBStorage`); anything else is a journal file path."""
    if "://" not in url:
        return optuna.storages.JournalStorage(JournalFileBackend(url))
    import sqlalchemy

    _check_driver(url)
    attempts = 0
    while True:  # workers started together race to create the tables: the losers try again
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_failures)
                return PatientRDBStorage(
                    url,
                    engine_kwargs={"pool_pre_ping": True},
                    heartbeat_interval=heartbeat,
                    grace_period=4 * heartbeat,
                    heartbeat_stale_trial_callback=retry,
                )
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as error:
            attempts += 1
            races = (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError)
            if attempts < 3 and any(isinstance(cause, races) for cause in error_chain(error)):
                time.sleep(0.5 + random.random())
                continue
            raise ConfigError(f"cannot open the study storage {safe_url(url)}: {_reason(error)}") from None


def _check_driver(url: str) -> None:
    """Refuse ``url`` when it is no database URL SQLAlchemy knows, or when the Python driver it needs is missing."""
    import sqlalchemy

    try:
        dialect = sqlalchemy.engine.make_url(url).get_dialect()
    except sqlalchemy.exc.ArgumentError as error:  # unparsable, or an unknown database
        raise ConfigError(
            f"storage {safe_url(url)} is not a database URL SQLAlchemy knows ({_reason(error)}); give "
            "postgresql://user@host/db, sqlite:///file.db or a journal file path."
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as error:
        advice = (
            "for PostgreSQL, pip install 'autocomp[postgres]' and give a postgresql://user@host/db URL"
            if dialect.name == "postgresql"
            else "install the Python package that provides it"
        )
        module = error.name or dialect.driver
        raise ConfigError(
            f"storage {safe_url(url)} needs the Python module {module!r} (SQLAlchemy's {dialect.name}+"
            f"{dialect.driver} driver), which is not installed; {advice}."
        ) from None


STORAGE_PATIENCE_SECONDS = 60.0
"""How long a shared storage's operation waits out an outage (the server restarting, a dropped connection)."""
FIRST_PAUSE = 0.25
"""Seconds before the first try again; each pause doubles, up to 4 s."""


class PatientRDBStorage(optuna.storages.RDBStorage):
    """An RDBStorage whose every database operation is tried again, with backoff, while the database is unreachable or
    drops the connection (a restarting server), for up to STORAGE_PATIENCE_SECONDS; then `ConfigError` in one line.
    An operation interrupted that way was rolled back, so trying it again does it once."""


def _patiently(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` of an RDBStorage, tried again through an outage (see `PatientRDBStorage`)."""

    @functools.wraps(method)
    def call(storage: PatientRDBStorage, *args: Any, **kwargs: Any) -> Any:
        deadline, pause = time.monotonic() + STORAGE_PATIENCE_SECONDS, FIRST_PAUSE
        while True:
            try:
                return method(storage, *args, **kwargs)
            except Exception as error:
                if not _outage(error):
                    raise
                if time.monotonic() + pause > deadline:
                    raise ConfigError(
                        f"the study storage {safe_url(storage.url)} did not answer for "
                        f"{STORAGE_PATIENCE_SECONDS:.0f} s: {_reason(error)}"
                    ) from None
                if pause == FIRST_PAUSE:
                    log.warning(
                        f"[yellow]warning:[/] the study storage {safe_url(storage.url)} does not answer "
                        f"({_reason(error)}); trying again for up to {STORAGE_PATIENCE_SECONDS:.0f} s"
                    )
            time.sleep(pause * (0.5 + random.random()))  # jittered: the workers do not all come back at once
            pause = min(2 * pause, 4.0)

    return call


# the calls that reach the database (the private ones: what Optuna's _CachedStorage, in front of it in a study, calls)
for _name in (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_all_studies",
    "_create_new_trial",
    "_set_trial_param",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "_get_trials",
    "_get_best_trial_id",
    "record_heartbeat",
    "_get_stale_trial_ids",
):
    setattr(PatientRDBStorage, _name, _patiently(getattr(optuna.storages.RDBStorage, _name)))


def _outage(error: BaseException) -> bool:
    """Whether ``error`` came from the database being unreachable or dropping the connection."""
    import sqlalchemy

    return any(
        isinstance(cause, sqlalchemy.exc.OperationalError) or getattr(cause, "connection_invalidated", False)
        for cause in error_chain(error)
    )


def safe_url(url: str) -> str:
    """``url`` with its password hidden."""
    import sqlalchemy

    try:
        return repr(sqlalchemy.engine.make_url(url).render_as_string(hide_password=True))
    except sqlalchemy.exc.ArgumentError:
        return repr(url)


def _reason(error: BaseException) -> str:
    """The first line of what the database or its driver said about ``error``."""
    said = next((orig for cause in error_chain(error) if (orig := getattr(cause, "orig", None)) is not None), error)
    return (str(said).strip().splitlines() or [type(said).__name__])[0]
