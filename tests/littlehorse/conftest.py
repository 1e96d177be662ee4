"""Fixtures for the tests against a real LittleHorse server (see README.md next to this file).

One Kafka and one server serve the whole session; each test gets its own tenant on it, so
tests do not see each other's TaskDefs, WfSpecs or WfRuns.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Generator, Iterator

import pytest
from harness import LittleHorseServer, MissingPrerequisite, RealLittleHorse
from littlehorse.config import LHConfig

_session: list[RealLittleHorse] = []
_last_user: list[pytest.Item] = []


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def real_lh() -> Iterator[RealLittleHorse]:
    """Kafka and LittleHorse server 1, started once for the session (the jars fetched first
    if they are not in the cache). Without a JDK 25, mvn or the download: skipped, or in CI
    (CI=true) failed, saying what is missing."""
    lh = RealLittleHorse()
    missing = None
    try:
        lh.start()
    except MissingPrerequisite as exc:
        missing = str(exc)
    # Outside the except block, so the report shows the message once, not a chain.
    if missing is not None:
        if in_ci():
            pytest.fail(f"the real LittleHorse tests cannot run here: {missing}", pytrace=False)
        pytest.skip(f"no real LittleHorse: {missing} (with CI=true this fails the run)")
    _session.append(lh)
    try:
        yield lh
    finally:
        lh.stop()


@pytest.fixture
def real_lh_server(real_lh: RealLittleHorse) -> LittleHorseServer:
    """Server 1, running: started again if an earlier test killed it and left it down."""
    server = real_lh.server
    if not server.running:
        server.start()
        server.wait_writable()
    return server


@pytest.fixture
def lh_tenant(real_lh_server: LittleHorseServer) -> str:
    """A tenant of this test's own on server 1."""
    tenant = f"test-{uuid.uuid4().hex[:12]}"
    real_lh_server.create_tenant(tenant)
    return tenant


@pytest.fixture
def lh_config(real_lh_server: LittleHorseServer, lh_tenant: str) -> LHConfig:
    """An LHConfig for server 1 in this test's tenant, whatever LHC_* the shell has set."""
    return real_lh_server.config(tenant=lh_tenant)


@pytest.fixture(scope="module")
def real_lh_cluster(real_lh: RealLittleHorse) -> Iterator[RealLittleHorse]:
    """`real_lh` with a second server (LHS_INSTANCE_ID=2: same Kafka and cluster id, its own
    ports and state) for the tests of one module. Stopped with SIGTERM afterwards, so that
    server 1 takes all partitions back at once and later modules find it as they expect."""
    second = real_lh.add_server()
    try:
        yield real_lh
    finally:
        if second in real_lh.servers:
            real_lh.remove_server(second)
        if not real_lh.server.running:
            real_lh.server.start()
        real_lh.server.wait_writable()


@pytest.hookimpl(trylast=True)  # after -k/-m/--lf have deselected what they will
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    users = [item for item in items if item.get_closest_marker("real_littlehorse")]
    _last_user[:] = users[-1:]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    yield
    # The JVMs hold ~700 MB and some CPU: free them for the rest of the suite as soon as the
    # last test that needs them is done, not at the end of the session.
    if _last_user and item is _last_user[0]:
        for lh in _session:
            lh.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for lh in _session:
        terminalreporter.write_line(f"real LittleHorse: {lh.describe_timings()}")
