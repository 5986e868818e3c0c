"""Checks that what a run reaches outside its process answers, made before anything is written or trained."""

from __future__ import annotations

import socket

from autocomp.app.config import RunConfig
from autocomp.app.runners.storage import check_storage
from autocomp.errors import ConfigError
from autocomp.imports import require


def check_reachable(config: RunConfig) -> None:
    """Refuse, in one sentence, a run whose Ray cluster or shared study storage does not answer (or whose storage's
    driver is not installed)."""
    if config.runner.kind == "ray":
        require("ray", "ray", "runner.kind: ray")
        if config.runner.address is not None:
            check_address(config.runner.address)
    check_storage(config.runner.storage)


def check_address(address: str) -> None:
    """Refuse, in one sentence, a cluster address where nothing answers (`ray.init` would wait for ever)."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(
            f"runner.address {address!r} is not HOST:PORT (for example 10.0.0.5:6379), auto or ray://HOST:PORT."
        )
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise ConfigError(
            f"runner.address {address!r}: no Ray cluster answers there ({err.strerror or err}); start "
            "one with `ray start --head` or leave runner.address unset for a local Ray."
        ) from None
