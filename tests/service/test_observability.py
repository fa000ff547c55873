"""Prometheus metrics count what happened; JSON logs carry request id, latency, status, prompts, cache hit."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from perceptra_seg.config import LoggingConfig
from perceptra_seg.service.logging import configure_logging

from .helpers import KEY_A, FakeBackend, auth, b64_png

BOX = [2, 2, 30, 30]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_the_requests_made(fake_client: Callable[..., Any], fake_backend: FakeBackend) -> None:
    image = b64_png(seed=11)
    with fake_client() as client:
        for _ in range(3):
            assert client.post("/v1/segment/box", json={"image": image, "box": BOX}).status_code == 200
        assert client.post("/v1/segment/box", json={"image": image, "box": [30, 2, 2, 30]}).status_code == 400
        image_id = client.post("/v1/embed", json={"image": image}).json()["image_id"]
        by_id = client.post("/v1/segment", json={"image_id": image_id, "boxes": [BOX, BOX]})
        assert by_id.status_code == 200
        assert client.get("/v1/healthz").status_code == 200
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)

    def requests(route: str, status: str) -> float:
        return _value(samples, "segmentor_http_requests_total", method="POST", route=route, status=status)

    assert requests("/v1/segment/box", "200") == 3
    assert requests("/v1/segment/box", "400") == 1
    assert requests("/v1/embed", "200") == 1
    assert requests("/v1/segment", "200") == 1
    assert _value(samples, "segmentor_http_requests_total", method="GET", route="/v1/healthz", status="200") == 1
    assert _value(samples, "segmentor_http_request_duration_seconds_count", method="POST", route="/v1/segment/box") == 4

    def stage(name: str) -> float:
        return _value(samples, "segmentor_inference_stage_seconds_count", stage=name)

    # 3 box requests + 1 embed decode the image; only the first of them encodes; 4 calls decode masks.
    assert (stage("decode_image"), stage("encode"), stage("decode_masks"), stage("outputs")) == (4, 1, 4, 4)
    assert _value(samples, "segmentor_embedding_cache_misses_total") == 1
    assert _value(samples, "segmentor_embedding_cache_hits_total") == 4  # 2 box + embed + segment by id
    assert _value(samples, "segmentor_embedding_cache_bytes") == 4096
    assert _value(samples, "segmentor_embedding_cache_entries") == 1
    assert _value(samples, "segmentor_model_loaded") == 1
    assert _value(samples, "segmentor_queue_depth") == 0
    assert _value(samples, "segmentor_inflight_requests") == 0
    assert fake_backend.encode_calls == 2  # warm-up + one cache miss


def test_request_logs_are_json_without_secrets(
    fake_client: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    image = b64_png(seed=12)
    headers = {**auth(KEY_A), "X-Request-ID": "trace-7"}
    with fake_client(server={"api_keys": [KEY_A]}, logging={"level": "INFO", "format": "json"}) as client:
        for _ in range(2):
            assert client.post("/v1/segment/box", json={"image": image, "box": BOX}, headers=headers).status_code == 200
        assert (
            client.post("/v1/segment", json={"image": image, "boxes": [BOX, BOX, BOX]}, headers=auth(KEY_A)).status_code
            == 200
        )
        assert (
            client.post(
                "/v1/segment/box", json={"image": image, "box": BOX}, headers=auth("wrong-key-secret")
            ).status_code
            == 403
        )
    err = capsys.readouterr().err
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    requests = [r for r in records if r.get("event") == "request"]
    traced = [r for r in requests if r["request_id"] == "trace-7"]
    assert len(traced) == 2
    first, second = traced
    key_id = hashlib.sha256(KEY_A.encode()).hexdigest()[:16]
    assert first["route"] == "/v1/segment/box" and first["status"] == 200 and first["method"] == "POST"
    assert first["prompts"] == 1 and first["key_id"] == key_id and first["level"] == "info"
    assert first["latency_ms"] > 0 and "timestamp" in first
    assert (first["cache_hit"], second["cache_hit"]) == (False, True)
    multi = next(r for r in requests if r["route"] == "/v1/segment")
    assert multi["prompts"] == 3
    assert next(r for r in requests if r["status"] == 403)["key_id"] is None
    assert any(r.get("event") == "model ready" for r in records)
    assert not any("message" in r for r in records)  # no copy of "event" left by other log handlers
    assert KEY_A not in err and "wrong-key-secret" not in err
    assert image[:40] not in err


def test_log_level_and_text_format() -> None:
    stream = io.StringIO()
    restore = configure_logging(LoggingConfig(level="WARNING", format="text"), stream=stream)
    try:
        log = logging.getLogger("perceptra_seg.service.test")
        log.info("hidden")
        log.warning("shown", extra={"route": "/v1/x"})
    finally:
        restore()
    text = stream.getvalue()
    assert "hidden" not in text
    assert "shown" in text and "route" in text and "/v1/x" in text and not text.lstrip().startswith("{")
    logging.getLogger("perceptra_seg.service.test").warning("after restore")
    assert "after restore" not in stream.getvalue()
