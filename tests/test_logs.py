"""Log lines go through `logging` under "autocomp": its own handler by default, the application's when it asks."""

from __future__ import annotations

import logging

import pytest

from autocomp import logs


@pytest.fixture
def handed_over():
    """autocomp's records propagated to the root logger (where caplog listens), restored afterwards."""
    logs.disable_default_handler()
    yield
    logs.enable_default_handler()
    logs.set_verbosity(logging.INFO)


def test_every_package_logs_under_autocomp_at_the_verbosity_asked(handed_over, caplog):
    caplog.set_level(logging.DEBUG)
    logs.logger("autocomp.train").info("an epoch")
    logs.logger("agents.greedy").info("a probe")
    logs.set_verbosity(logging.WARNING)
    logs.logger("search_spaces.space").info("hidden")
    logs.logger("autocomp.app.search_loop").warning("over the limit")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("autocomp.train", "an epoch"),
        ("autocomp.agents.greedy", "a probe"),
        ("autocomp.app.search_loop", "over the limit"),
    ]


def test_the_default_handler_writes_to_stderr_without_set_up(capsys):
    logs.logger("autocomp.train").info("baseline: cached")
    assert "baseline: cached" in capsys.readouterr().err
