"""Fixtures of the zone-agent tests: a redis-server per module, agents per test (agent_fixtures)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_fixtures import REDIS, Agents, start_redis

from targets.servers import stop_server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A redis-server of the module's own on a free loopback port, nothing persisted."""
    if not Path(REDIS).exists():
        pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    proc, url = start_redis()
    try:
        yield url
    finally:
        stop_server(proc)


@pytest.fixture
def agents(redis_url: str) -> Iterator[Agents]:
    root = Path(tempfile.mkdtemp(prefix="otfuzz-agents-", dir="/tmp"))
    factory = Agents(redis_url, root)
    try:
        yield factory
    finally:
        factory.stop_all()
        shutil.rmtree(root, ignore_errors=True)


