"""API keys, public health/metrics, rate limits, image-id scoping, CORS, docs switch and start-up refusals."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from perceptra_seg.config import SegmentorConfig
from perceptra_seg.exceptions import ConfigError
from perceptra_seg.service import create_app
from perceptra_seg.service.security import Authenticator

from .helpers import KEY_A, KEY_B, FakeBackend, auth, b64_png, build_config, running

BOX = {"image": "", "box": [2, 2, 30, 30]}


def _box() -> dict[str, Any]:
    return {**BOX, "image": b64_png()}


def test_missing_and_wrong_keys(fake_client: Callable[..., Any], fake_backend: FakeBackend) -> None:
    with fake_client(server={"api_keys": [KEY_A, KEY_B]}) as client:
        missing = client.post("/v1/segment/box", json=_box())
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        wrong = client.post("/v1/segment/box", json=_box(), headers=auth("nope"))
        assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"
        basic = client.post("/v1/segment/box", json=_box(), headers={"Authorization": f"Basic {KEY_A}"})
        assert basic.status_code == 401
        calls = fake_backend.encode_calls
        assert client.post("/v1/segment/box", json=_box(), headers=auth(KEY_A)).status_code == 200
        assert client.post("/v1/segment/box", json=_box(), headers={"X-API-Key": KEY_B}).status_code == 200
        assert fake_backend.encode_calls == calls + 1  # rejected requests never reached the model


def test_authenticator_checks_every_key() -> None:
    from pydantic import SecretStr

    authenticator = Authenticator([SecretStr("first"), SecretStr("second")])
    assert authenticator.key_id("second") == hashlib.sha256(b"second").hexdigest()[:16]
    with pytest.raises(ConfigError):
        Authenticator([SecretStr("")])


def test_health_and_metrics_visibility(fake_client: Callable[..., Any]) -> None:
    with fake_client(server={"api_keys": [KEY_A]}) as client:
        assert client.get("/v1/healthz").status_code == 200  # public_health defaults to true
        assert client.get("/v1/readyz").status_code == 200
        assert client.get("/metrics").status_code == 401  # public_metrics defaults to false
        assert client.get("/metrics", headers=auth(KEY_A)).status_code == 200
    with fake_client(server={"api_keys": [KEY_A], "public_health": False, "public_metrics": True}) as client:
        assert client.get("/v1/healthz").status_code == 401
        assert client.get("/v1/healthz", headers=auth(KEY_A)).status_code == 200
        assert client.get("/metrics").status_code == 200


def test_rate_limit_per_key(fake_client: Callable[..., Any]) -> None:
    with fake_client(server={"api_keys": [KEY_A, KEY_B], "rate_limit": "3/minute"}) as client:
        for _ in range(3):
            assert client.post("/v1/segment/box", json=_box(), headers=auth(KEY_A)).status_code == 200
        limited = client.post("/v1/segment/box", json=_box(), headers=auth(KEY_A))
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert client.post("/v1/embed", json={"image": b64_png()}, headers=auth(KEY_A)).status_code == 429
        assert client.post("/v1/segment/box", json=_box(), headers=auth(KEY_B)).status_code == 200
        assert client.get("/v1/healthz").status_code == 200  # health is never rate limited


def test_rate_limit_without_keys_uses_the_client_address(fake_client: Callable[..., Any]) -> None:
    with fake_client(server={"rate_limit": "2/minute"}) as client:
        statuses = [client.post("/v1/segment/box", json=_box()).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]


def test_image_ids_are_scoped_to_the_key(fake_client: Callable[..., Any]) -> None:
    with fake_client(server={"api_keys": [KEY_A, KEY_B]}) as client:
        image = b64_png(seed=3)
        id_a = client.post("/v1/embed", json={"image": image}, headers=auth(KEY_A)).json()["image_id"]
        request = {"image_id": id_a, "box": [2, 2, 30, 30]}
        assert client.post("/v1/segment/box", json=request, headers=auth(KEY_A)).status_code == 200
        foreign = client.post("/v1/segment/box", json=request, headers=auth(KEY_B))
        assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "not_found"
        id_b = client.post("/v1/embed", json={"image": image}, headers=auth(KEY_B)).json()["image_id"]
        assert id_b != id_a
        assert client.post("/v1/embed", json={"image": image}, headers=auth(KEY_A)).json()["image_id"] == id_a


def test_cors_from_config(fake_client: Callable[..., Any]) -> None:
    with fake_client(server={"cors_origins": ["https://app.example"]}) as client:
        preflight = {
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        allowed = client.options("/v1/segment/box", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-credentials" not in allowed.headers
        other = client.get("/v1/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    with fake_client() as client:  # no origins configured: no CORS headers at all
        assert (
            "access-control-allow-origin"
            not in client.get("/v1/healthz", headers={"Origin": "https://app.example"}).headers
        )


def test_wildcard_origin_with_credentials_is_refused() -> None:
    with pytest.raises(ConfigError, match="cors_allow_credentials"):
        build_config(server={"cors_origins": ["*"], "cors_allow_credentials": True})
    with fake_app(server={"cors_origins": ["https://a.example"], "cors_allow_credentials": True}) as client:
        response = client.get("/v1/healthz", headers={"Origin": "https://a.example"})
        assert response.headers["access-control-allow-credentials"] == "true"


def fake_app(**sections: Any) -> Any:
    return running(create_app(build_config(**sections), backend=FakeBackend()))


def test_invalid_server_settings_are_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="rate_limit"):
        create_app(build_config(server={"rate_limit": "lots"}), backend=FakeBackend())
    with pytest.raises(ConfigError, match="api_keys"):
        create_app(build_config(server={"api_keys": [""]}), backend=FakeBackend())
    with pytest.raises(ConfigError, match="url_allowed_networks"):
        build_config(server={"url_allowed_networks": ["not-a-network"]})


def test_docs_can_be_turned_off(fake_client: Callable[..., Any]) -> None:
    with fake_client() as client:
        assert client.get("/docs").status_code == 200
        spec = client.get("/openapi.json").json()
        assert "/v1/segment/box" in spec["paths"] and "/metrics" not in spec["paths"]
    with fake_client(server={"docs_enabled": False}) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 404


def test_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMENTOR_SERVER_API_KEYS", json.dumps(["env-key-1"]))
    monkeypatch.setenv("SEGMENTOR_LOGGING_LEVEL", "WARNING")
    config = SegmentorConfig.load()
    assert "env-key-1" not in repr(config)  # secrets never show in reprs or logs
    with running(create_app(config, backend=FakeBackend())) as client:
        assert client.post("/v1/segment/box", json=_box()).status_code == 401
        assert client.post("/v1/segment/box", json=_box(), headers=auth("env-key-1")).status_code == 200


def test_openapi_declares_the_security_schemes_only_with_keys(fake_client: Callable[..., Any]) -> None:
    with fake_client(server={"api_keys": [KEY_A]}) as client:
        schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
        assert {"HTTPBearer", "APIKeyHeader"} <= set(schemes)
    with fake_client() as client:
        assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})
