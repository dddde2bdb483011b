"""Fixtures for the end-to-end tests: the source media, a server process, re-splitting proxies."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.media import SourceMedia, source_media
from support.proxy import ResplitProxy
from support.server import ServerProcess, running_server


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> SourceMedia:
    """The 2 s H.264 + AAC FLV and its packet counts, shared by all xdist workers."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's directory, common to every worker
    return source_media(base / "e2e-media")


@pytest.fixture
def rtmp_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """`rtmp2-server` on a free loopback port, recording under tmp_path/rec.

    Stopped with SIGTERM after the test, and it must then exit 0.
    """
    with running_server(tmp_path / "rec", tmp_path / "server.log") as server:
        request.node._rtmp_server = server
        yield server
    assert server.returncode == 0, (
        f"rtmp2-server exited {server.returncode} on SIGTERM:\n{server.log()}"
    )


@pytest.fixture
def resplit_proxy() -> Iterator[Callable[..., ResplitProxy]]:
    """Factory: `resplit_proxy(target_port, seed=...)` gives a started proxy, closed afterwards."""
    proxies: list[ResplitProxy] = []

    def make(target_port: int, seed: int = 0) -> ResplitProxy:
        proxy = ResplitProxy(target_port, seed=seed)
        proxy.start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the server's log to the report of a failed end-to-end test."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    server = getattr(item, "_rtmp_server", None)
    if report.failed and isinstance(server, ServerProcess):
        report.sections.append((f"rtmp2-server log ({call.when})", server.log()))
