"""Property-based API test: requests generated from the OpenAPI document never get a 5xx and always conform.

The app runs under uvicorn on loopback with the fast fake backend; a few examples per operation keep it quick.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from perceptra_seg.service import create_app  # noqa: E402

from .helpers import KEY_A, FakeBackend, auth, build_config, free_port, live_server  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _config() -> Any:
    return build_config(
        server={"api_keys": [KEY_A], "port": free_port(), "max_queue": 64}, input={"max_pixels": 4_000_000}
    )


# Building an app has no side effects (the model loads in the lifespan), so the schema can come from one here.
schema = schemathesis.openapi.from_dict(create_app(_config(), backend=FakeBackend()).openapi())


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    config = _config()
    with live_server(create_app(config, backend=FakeBackend()), config) as url:
        yield url


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_server_errors(case: Any, base_url: str) -> None:
    case.call_and_validate(base_url=base_url, headers=auth(KEY_A), checks=CHECKS)
