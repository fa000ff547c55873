"""Fixtures for the REST service tests (helpers live in helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")

from perceptra_seg.service import create_app

from .helpers import FakeBackend, build_config, running


@pytest.fixture
def fake_backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def fake_client(fake_backend: FakeBackend) -> Callable[..., Any]:
    """``with fake_client(server={...}) as client:`` — a ready app over ``fake_backend``."""

    def make(**sections: dict[str, Any]) -> Any:
        return running(create_app(build_config(**sections), backend=fake_backend))

    return make


@pytest.fixture(scope="session")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real redis-server on 127.0.0.1 (free port, temporary directory) for the shared-state tests; skips the test
    when redis-server is not installed."""
    from .redis_support import redis_server

    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server
