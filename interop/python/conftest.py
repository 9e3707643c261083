"""Fixtures for the interop suite: the gangway binary, `gangway serve` instances, a watchdog."""

from __future__ import annotations

import faulthandler
import sys

import pytest

from support import GangwayServer, gangway_bin

# Hard upper bound for one test, on top of the timeouts inside each test: if a test ever hangs,
# dump every thread's stack and end the run (children die with it: PR_SET_PDEATHSIG).
TEST_WATCHDOG_SECONDS = 180


BIN_KEY = pytest.StashKey[str]()


def pytest_configure(config):
    # Fail the whole run at once, with a clear message, when the binary is missing: a suite that
    # cannot run its peer must never look like a suite that passed or skipped.
    try:
        path = gangway_bin()
    except FileNotFoundError as err:
        raise pytest.UsageError(str(err)) from None
    config.stash[BIN_KEY] = path


def pytest_report_header(config):
    return f"gangway binary: {config.stash[BIN_KEY]}"


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.dump_traceback_later(TEST_WATCHDOG_SECONDS, exit=True, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def gangway_server():
    """Factory: `gangway_server("--protocol", "chat")` starts `gangway serve` on 127.0.0.1:0.

    Every server started through it is killed and reaped at teardown, whatever the test did.
    """
    started: list[GangwayServer] = []

    def start(*args: str) -> GangwayServer:
        server = GangwayServer(*args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
