"""The service side of the seam (issue 16): a REST request's image is decoded exactly once (by the SDK, under the
service's input policy), and the SDK's per-call metadata is what the response reports."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from .helpers import b64_png, png_bytes

BOX = [4, 4, 40, 30]


@pytest.fixture
def client(fake_client: Callable[..., Any]) -> Iterator[TestClient]:
    with fake_client() as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("route", "payload"),
    [
        ("/v1/segment/box", {"box": BOX}),
        ("/v1/segment/points", {"points": [{"x": 20, "y": 20, "label": 1}]}),
        ("/v1/segment", {"boxes": [BOX, [1, 1, 20, 20]], "points": [{"x": 20, "y": 20}], "strategy": "merge"}),
        ("/v1/embed", {}),
    ],
)
def test_a_json_request_decodes_its_image_once(
    client: TestClient, decodes: Counter[str], route: str, payload: dict[str, Any]
) -> None:
    response = client.post(route, json={"image": b64_png(seed=len(route)), **payload})
    assert response.status_code == 200, response.text
    assert decodes == Counter({"decode_image_bytes": 1})


def test_uploads_decode_once_and_image_ids_not_at_all(client: TestClient, decodes: Counter[str]) -> None:
    files = {"file": ("a.png", png_bytes(seed=9), "image/png")}
    upload = client.post("/v1/segment/upload", files=files, data={"request": '{"boxes": [[4, 4, 40, 30]]}'})
    assert upload.status_code == 200, upload.text
    assert decodes == Counter({"decode_image_bytes": 1})
    image_id = client.post("/v1/embed/upload", files=files).json()["image_id"]
    assert decodes == Counter({"decode_image_bytes": 2})
    by_id = client.post("/v1/segment/box", json={"image_id": image_id, "box": BOX})
    assert by_id.status_code == 200 and decodes == Counter({"decode_image_bytes": 2})


def test_the_response_reports_the_sdk_call_under_the_http_request_id(client: TestClient) -> None:
    response = client.post(
        "/v1/segment", json={"image": b64_png(), "boxes": [BOX]}, headers={"X-Request-ID": "seam-check-1"}
    )
    body = response.json()
    assert response.headers["X-Request-ID"] == body["request_id"] == "seam-check-1"
    assert body["latency_ms"] > 0 and body["model_info"] == client.get("/v1/readyz").json()["model_info"]


def test_strategy_best_over_rest_keeps_one_mask(client: TestClient) -> None:
    body = client.post(
        "/v1/segment", json={"image": b64_png(), "boxes": [BOX, [1, 1, 10, 10]], "strategy": "best"}
    ).json()
    assert [r["prompt_index"] for r in body["results"]] == [0]


def test_quality_minimums_over_rest(client: TestClient) -> None:
    plain = client.post("/v1/segment/box", json={"image": b64_png(), "box": BOX}).json()
    score, stability = plain["score"], plain["stability_score"]
    assert 0.0 <= stability <= 1.0
    kept = client.post("/v1/segment/box", json={"image": b64_png(), "box": BOX, "min_score": score})
    assert kept.status_code == 200 and kept.json()["score"] == score
    dropped = client.post("/v1/segment/box", json={"image": b64_png(), "box": BOX, "min_score": score + 0.01})
    assert dropped.status_code == 404 and "min_score" in dropped.json()["error"]["message"]
    many = {"image": b64_png(), "boxes": [BOX, [1, 1, 20, 20]], "min_stability": min(1.0, stability + 1e-3)}
    assert client.post("/v1/segment", json=many).json()["results"] == [] or stability == 1.0
    bad = client.post("/v1/segment", json={"image": b64_png(), "boxes": [BOX], "min_stability": 2})
    assert bad.status_code == 422
