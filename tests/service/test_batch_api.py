"""``/v1/batch``: jobs over many images on the service's own runner — the same masks as ``/v1/segment`` (demo model),
per-image failures in their slots, paging, bounds (413 / 429), per-key scoping, cancellation and expiry."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from perceptra_seg.service import create_app

from .helpers import KEY_A, KEY_B, FakeBackend, auth, b64_png, build_config, png_bytes, running, wait_batch_finished

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools

SAMPLE = Path(__file__).resolve().parents[2] / "perceptra_seg" / "assets" / "sample.png"
DEMO = {"model": {"name": "demo"}, "runtime": {"device": "cpu"}}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _flipped_png() -> bytes:
    buffer = io.BytesIO()
    Image.open(SAMPLE).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(buffer, format="PNG")
    return buffer.getvalue()


def _masks(results: list[dict[str, Any]]) -> list[np.ndarray]:
    return [
        mask_utils.decode({"size": r["rle"]["size"], "counts": r["rle"]["counts"].encode("ascii")}).astype(bool)
        for r in results
    ]


@pytest.fixture(scope="module")
def demo() -> Iterator[Any]:
    app = create_app(build_config(DEMO, server={"api_keys": [KEY_A, KEY_B], "max_batch_images": 4}))
    with running(app, headers=auth(KEY_A)) as client:
        yield client


def test_batch_results_equal_segment(demo: Any) -> None:
    sample, flipped = _b64(SAMPLE.read_bytes()), _b64(_flipped_png())
    image_id = demo.post("/v1/embed", json={"image": sample}).json()["image_id"]
    other_id = demo.post("/v1/embed", json={"image": sample}, headers=auth(KEY_B)).json()["image_id"]
    entries: list[dict[str, Any]] = [
        {"image": sample, "boxes": [[40, 30, 200, 160]], "points": [{"x": 120, "y": 90}]},
        {"image": "bm90IGFuIGltYWdl", "boxes": [[1, 1, 5, 5]]},  # base64 of "not an image"
        {"image": flipped, "prompts": [{"points": [{"x": 60, "y": 50}, {"x": 150, "y": 120, "label": 0}]}]},
        {"image_id": image_id, "boxes": [[10, 10, 90, 90]], "output_formats": ["rle", "polygons"]},
    ]
    submitted = demo.post("/v1/batch", json={"images": [*entries, {"image_id": other_id, "boxes": [[1, 1, 9, 9]]}]})
    assert submitted.status_code == 413 and submitted.json()["error"]["code"] == "batch_too_large"
    submitted = demo.post("/v1/batch", json={"images": entries})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    assert submitted.headers["location"] == f"/v1/batch/{job_id}"
    assert submitted.json()["total"] == 4 and submitted.json()["status"] in ("queued", "running")
    finished = wait_batch_finished(demo, job_id)
    assert (finished["status"], finished["done"], finished["failed"], finished["pending"]) == ("done", 3, 1, 0)
    assert finished["model_info"]["model"] == "demo" and finished["next_offset"] is None
    slots = finished["results"]
    assert [slot["index"] for slot in slots] == [0, 1, 2, 3]
    assert slots[1]["status"] == "failed" and slots[1]["error"]["code"] == "invalid_input"
    for index in (0, 2, 3):
        reference = demo.post("/v1/segment", json=entries[index])
        assert reference.status_code == 200, reference.text
        slot = slots[index]
        assert slot["status"] == "done" and slot["latency_ms"] > 0
        assert len(slot["results"]) == len(reference.json()["results"]) >= 1
        for got, want, mask, expected in zip(
            slot["results"],
            reference.json()["results"],
            _masks(slot["results"]),
            _masks(reference.json()["results"]),
            strict=True,
        ):
            assert np.array_equal(mask, expected) and mask.any()
            assert got["score"] == pytest.approx(want["score"], abs=1e-6)
            assert got.keys() == want.keys()
    assert "polygons" in slots[3]["results"][0]
    page = demo.get(f"/v1/batch/{job_id}", params={"offset": 1, "limit": 2}).json()
    assert [slot["index"] for slot in page["results"]] == [1, 2] and page["next_offset"] == 3
    assert demo.get(f"/v1/batch/{job_id}", params={"offset": 9}).json()["results"] == []
    assert demo.get(f"/v1/batch/{job_id}", params={"limit": 0}).status_code == 422
    # another key sees neither the job nor (inside a job) the first key's image ids
    for answer in (
        demo.get(f"/v1/batch/{job_id}", headers=auth(KEY_B)),
        demo.delete(f"/v1/batch/{job_id}", headers=auth(KEY_B)),
    ):
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    foreign = demo.post(
        "/v1/batch", json={"images": [{"image_id": image_id, "boxes": [[1, 1, 9, 9]]}]}, headers=auth(KEY_B)
    )
    finished = wait_batch_finished(demo, foreign.json()["job_id"], auth(KEY_B))
    assert finished["status"] == "failed" and finished["results"][0]["error"]["code"] == "not_found"
    assert demo.delete(f"/v1/batch/{job_id}").status_code == 204
    assert demo.get(f"/v1/batch/{job_id}").status_code == 404


def test_multipart_batch_equals_json_batch(demo: Any) -> None:
    files = [SAMPLE.read_bytes(), _flipped_png()]
    options = [{"boxes": [[40, 30, 200, 160]]}, {"points": [{"x": 60, "y": 50}], "multimask": True}]
    upload = demo.post(
        "/v1/batch",
        files=[("file", ("a.png", files[0], "image/png")), ("file", ("b.png", files[1], "image/png"))],
        data={"request": json.dumps(options)},
    )
    assert upload.status_code == 202, upload.text
    as_json = demo.post(
        "/v1/batch", json={"images": [{"image": _b64(f), **o} for f, o in zip(files, options, strict=True)]}
    )
    uploaded = wait_batch_finished(demo, upload.json()["job_id"])
    sent = wait_batch_finished(demo, as_json.json()["job_id"])
    assert uploaded["done"] == sent["done"] == 2
    for a, b in zip(uploaded["results"], sent["results"], strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(_masks(a["results"]), _masks(b["results"]), strict=True))
    # one options object applies to every file
    shared = demo.post(
        "/v1/batch",
        files=[("file", ("a.png", files[0], "image/png")), ("file", ("a2.png", files[0], "image/png"))],
        data={"request": '{"boxes": [[40, 30, 200, 160]]}'},
    )
    slots = wait_batch_finished(demo, shared.json()["job_id"])["results"]
    assert np.array_equal(_masks(slots[0]["results"])[0], _masks(slots[1]["results"])[0])
    assert np.array_equal(_masks(slots[0]["results"])[0], _masks(uploaded["results"][0]["results"])[0])


def test_bad_batches_are_refused_before_running(demo: Any) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"json": {"images": []}}, 422, "validation_error"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "validation_error"),
        ({"json": {"images": [{"image": b64_png(), "boxes": [[1, 2, 3]]}]}}, 422, "validation_error"),
        ({"json": {"images": [{"image": "https://example.com/a.png", "boxes": [[1, 1, 5, 5]]}]}}, 400, "invalid_input"),
        (
            {"json": {"images": [{"image": b64_png()}, {"image": b64_png(), "boxes": [[1, 1, 5, 5]] * 300}]}},
            413,
            "request_too_large",
        ),
        ({"files": [("file", ("a.png", png_bytes(), "image/png"))] * 5}, 413, "batch_too_large"),
        (
            {"files": [("file", ("a.png", png_bytes(), "image/png"))] * 2, "data": {"request": "[{}]"}},
            400,
            "invalid_input",
        ),
        (
            {"files": [("file", ("a.png", png_bytes(), "image/png"))], "data": {"request": '{"strategy": "x"}'}},
            422,
            "validation_error",
        ),
        ({"files": [("other", ("a.png", png_bytes(), "image/png"))]}, 422, "validation_error"),
    ]
    for kwargs, status, code in cases:
        answer = demo.post("/v1/batch", **kwargs)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), (kwargs.keys(), answer.text)
    too_many = demo.post(
        "/v1/batch", json={"images": [{"image": b64_png()}, {"image": b64_png(), "boxes": [[1, 1, 5, 5]] * 300}]}
    )
    assert "image 1" in too_many.json()["error"]["message"]
    assert demo.get("/v1/batch/" + "0" * 32).status_code == 404


class GatedBackend(FakeBackend):
    """A FakeBackend whose decode waits for ``gate`` once ``armed`` (after the warm-up)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.armed = False
        self.started = threading.Semaphore(0)

    def decode(self, *args: Any, **kwargs: Any) -> Any:
        if self.armed:
            self.started.release()
            self.gate.wait(timeout=60)
        return super().decode(*args, **kwargs)


def test_quotas_queueing_cancel_and_expiry() -> None:
    backend = GatedBackend()
    server = {"api_keys": [KEY_A, KEY_B], "max_batch_jobs": 1, "batch_result_ttl_s": 100.0, "max_batch_images": 8}
    app = create_app(build_config(server=server), backend=backend)
    three = {"images": [{"image": b64_png(seed=i), "boxes": [[4, 4, 40, 30]]} for i in range(3)]}
    with running(app, headers=auth(KEY_A)) as client:
        try:
            backend.armed = True
            first = client.post("/v1/batch", json=three)
            assert first.status_code == 202
            assert backend.started.acquire(timeout=30)  # the first image is in the model now
            assert client.get(f"/v1/batch/{first.json()['job_id']}").json()["status"] == "running"
            again = client.post("/v1/batch", json=three)
            assert again.status_code == 429 and again.json()["error"]["code"] == "too_many_batch_jobs"
            other = client.post("/v1/batch", json=three, headers=auth(KEY_B))  # its own quota; waits its turn
            assert other.status_code == 202
            assert client.get(f"/v1/batch/{other.json()['job_id']}", headers=auth(KEY_B)).json()["status"] == "queued"
            assert client.delete(f"/v1/batch/{first.json()['job_id']}").status_code == 204
            assert client.get(f"/v1/batch/{first.json()['job_id']}").status_code == 404
            calls = backend.decode_calls
            backend.armed = False
            backend.gate.set()
            finished = wait_batch_finished(client, other.json()["job_id"], auth(KEY_B))
            assert finished["done"] == 3
            # the cancelled job's image in the model finished its decode; none of its other images ran
            assert backend.decode_calls == calls + 1 + 3
            replaced = client.post("/v1/batch", json=three)  # the cancelled job no longer counts
            assert replaced.status_code == 202
            wait_batch_finished(client, replaced.json()["job_id"])
            store = app.state.service.batches
            now = store.clock()
            store.clock = lambda: now + 100.0
            assert client.get(f"/v1/batch/{replaced.json()['job_id']}").status_code == 404
            assert len(store) == 0
        finally:
            backend.gate.set()


def test_batch_jobs_are_shared_by_workers_through_redis(redis: Any) -> None:
    pytest.importorskip("redis")
    server = {"api_keys": [KEY_A, KEY_B], "state": "redis", "redis_url": redis.url, "max_batch_jobs": 1}
    owner, other = GatedBackend(), FakeBackend()
    three = {"images": [{"image": b64_png(seed=i), "boxes": [[4, 4, 40, 30]]} for i in range(3)]}
    with (
        running(create_app(build_config(server=server), backend=owner), headers=auth(KEY_A)) as a,
        running(create_app(build_config(server=server), backend=other), headers=auth(KEY_A)) as b,
    ):
        try:
            owner.armed = True
            job_id = a.post("/v1/batch", json=three).json()["job_id"]
            assert owner.started.acquire(timeout=30)
            seen = b.get(f"/v1/batch/{job_id}")  # the other worker answers from Redis
            assert seen.status_code == 200 and (seen.json()["total"], seen.json()["pending"]) == (3, 3)
            assert seen.json()["status"] == "running" and seen.json()["results"][0] == {"index": 0, "status": "pending"}
            refused = b.post("/v1/batch", json=three)  # the quota counts the other worker's job
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_batch_jobs"
            assert b.get(f"/v1/batch/{job_id}", headers=auth(KEY_B)).status_code == 404
            owner.armed = False
            owner.gate.set()
            finished = wait_batch_finished(b, job_id)
            assert finished == a.get(f"/v1/batch/{job_id}").json() and finished["done"] == 3
            assert b.get(f"/v1/batch/{job_id}", params={"offset": 2, "limit": 5}).json()["results"][0]["index"] == 2
            # deleted on the other worker: the owner stops before its next image
            owner.gate.clear()
            owner.armed = True
            second = a.post("/v1/batch", json=three).json()["job_id"]
            assert owner.started.acquire(timeout=30)
            calls = owner.decode_calls
            assert b.delete(f"/v1/batch/{second}").status_code == 204
            owner.armed = False
            owner.gate.set()
            for _ in range(600):
                if a.get(f"/v1/batch/{second}").status_code == 404:
                    break
                time.sleep(0.05)
            assert a.get(f"/v1/batch/{second}").status_code == 404
            assert b.get(f"/v1/batch/{second}").status_code == 404
            assert owner.decode_calls == calls + 1  # the image in the model finished; no other one started
            assert b.get(f"/v1/batch/{job_id}").status_code == 200  # a finished job stays until its TTL
            # a worker that shuts down takes its unfinished jobs out of Redis (and out of the quota)
            owner.gate.clear()
            owner.armed = True
            assert a.post("/v1/batch", json=three).status_code == 202
            assert owner.started.acquire(timeout=30)
            assert b.post("/v1/batch", json=three).status_code == 429
            a.portal.call(a.app.state.service.batches.close_all)  # what the app's shutdown runs first
            assert b.post("/v1/batch", json=three).status_code == 202
        finally:
            owner.gate.set()
