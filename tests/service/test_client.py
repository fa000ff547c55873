"""perceptra_seg.client against a real server process on 127.0.0.1: the same masks as the SDK (demo model),
refinement, errors mapped onto the SDK's exceptions, and retries of real 429 / 503 answers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from perceptra_seg import Segmentor
from perceptra_seg.client import (
    AsyncClient,
    Client,
    RateLimitedError,
    RequestTimeoutError,
    RetryPolicy,
    ServiceConnectionError,
)
from perceptra_seg.exceptions import AuthError, InvalidInputError, NotFoundError, ResourceExhaustedError
from perceptra_seg.models import EmbeddedImage
from perceptra_seg.results import ResultSet
from perceptra_seg.utils.masks import png_to_mask

from .helpers import KEY_A, free_port, metric, png_bytes, server_process

SAMPLE = Path(__file__).resolve().parents[2] / "perceptra_seg" / "assets" / "sample.png"


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[str, Segmentor, np.ndarray]]:
    """A server process over the demo model (API key KEY_A), an SDK Segmentor on it, and the sample image."""
    sections = {"model": {"name": "demo"}, "runtime": {"device": "cpu"}, "server": {"api_keys": [KEY_A]}}
    with server_process(sections) as base, Segmentor(model="demo", device="cpu") as sdk:
        yield base, sdk, np.asarray(Image.open(SAMPLE).convert("RGB"))


def record_statuses(client: Client) -> list[int]:
    """The HTTP status of every answer the client receives (retries included)."""
    statuses: list[int] = []
    client._http.event_hooks["response"].append(lambda response: statuses.append(response.status_code))
    return statuses


def test_box_and_points_match_the_sdk(demo: tuple[str, Segmentor, np.ndarray]) -> None:
    base, sdk, pixels = demo
    with Client(base, api_key=KEY_A) as client:
        got = client.segment_box(SAMPLE, (40, 30, 200, 170), output_formats=["numpy", "png", "polygons"])
        clicks = [(120, 90, 1), (200, 140, 0)]
        by_points = client.segment_points(pixels, clicks, output_formats="rle")
    want = sdk.segment_from_box(pixels, (40, 30, 200, 170), output_formats=["numpy", "polygons"])
    assert got.mask is not None and np.array_equal(got.mask, want.mask)
    assert got.png_bytes is not None and np.array_equal(png_to_mask(got.png_bytes), want.mask)
    assert got.polygons == want.polygons
    assert got.score == pytest.approx(want.score, abs=1e-5)
    assert (got.area, got.bbox) == (want.area, want.bbox)
    assert len(got.request_id) == 32 and got.model_info["model"] == "demo"
    want_points = sdk.segment_from_points(pixels, clicks, output_formats=["numpy"])
    assert by_points.mask is not None and np.array_equal(by_points.mask, want_points.mask)
    assert by_points.rle is not None and by_points.png_bytes is None


def test_click_refinement_matches_the_sdk(demo: tuple[str, Segmentor, np.ndarray]) -> None:
    base, sdk, pixels = demo
    clicks = [(120, 90, 1), (200, 140, 0), (150, 100, 1)]
    with Client(base, api_key=KEY_A) as client:
        handle = client.embed(SAMPLE)
        assert isinstance(handle, EmbeddedImage) and (handle.height, handle.width) == pixels.shape[:2]
        ours = theirs = None
        for count in range(1, len(clicks) + 1):
            ours = client.segment_points(
                handle,
                clicks[:count],
                output_formats=["numpy"],
                return_logits=True,
                mask_input=None if ours is None else ours.low_res_logits,
            )
            theirs = sdk.segment_from_points(
                pixels,
                clicks[:count],
                output_formats=["numpy"],
                mask_input=None if theirs is None else theirs.low_res_logits,
            )
            assert ours.mask is not None and np.array_equal(ours.mask, theirs.mask)
            assert ours.low_res_logits is not None and theirs.low_res_logits is not None
            assert np.allclose(ours.low_res_logits, theirs.low_res_logits, atol=1e-4)
    plain = sdk.segment_from_points(pixels, clicks, output_formats=["numpy"])
    assert ours is not None and not np.array_equal(plain.mask, ours.mask)  # the logits changed the answer


def test_segment_and_auto_return_result_sets(demo: tuple[str, Segmentor, np.ndarray]) -> None:
    base, sdk, pixels = demo
    boxes = [(40, 30, 200, 170), (10, 10, 90, 120)]
    with Client(base, api_key=KEY_A) as client:
        handle = client.embed(pixels)
        got = client.segment(handle, boxes=boxes, output_formats=["numpy"])
        merged = client.segment(SAMPLE, prompts=[{"box": boxes[0]}, {"points": [(60, 60, 1)]}], strategy="merge")
        auto = client.segment_auto(
            SAMPLE, output_formats=["numpy"], points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
        )
    assert isinstance(got, ResultSet) and got.image_size == pixels.shape[:2]
    assert len(got.info.request_id) == 32 and got.info.latency_ms > 0 and got.info.model_info["model"] == "demo"
    want = sdk.segment(pixels, boxes=boxes, output_formats=["numpy"])
    assert [r.prompt_index for r in got] == [0, 1]
    for ours, theirs in zip(got, want, strict=True):
        assert np.array_equal(ours.mask, theirs.mask) and ours.score == pytest.approx(theirs.score, abs=1e-5)
    assert len(merged) == 1 and merged[0].prompt_index == -1
    want_auto = sdk.generate(
        pixels, output_formats=["numpy"], points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )
    assert len(auto) == len(want_auto) > 0
    for ours, theirs in zip(auto, want_auto, strict=True):
        assert np.array_equal(ours.mask, theirs.mask)
        assert ours.stability_score == pytest.approx(theirs.stability_score, abs=1e-5)
        assert ours.crop_box == theirs.crop_box


def test_async_client_matches_the_sdk(demo: tuple[str, Segmentor, np.ndarray]) -> None:
    base, sdk, pixels = demo

    async def run() -> Any:
        async with AsyncClient(base, api_key=KEY_A) as client:
            handle = await client.embed(SAMPLE.read_bytes())
            return await asyncio.gather(
                client.segment_points(handle, [(120, 90, 1)], output_formats=["numpy"]),
                client.segment_box(handle, (40, 30, 200, 170), output_formats=["numpy"]),
                client.segment(handle, boxes=[(40, 30, 200, 170)], output_formats=["numpy"]),
            )

    by_points, by_box, many = asyncio.run(run())
    assert np.array_equal(
        by_points.mask, sdk.segment_from_points(pixels, [(120, 90, 1)], output_formats=["numpy"]).mask
    )
    box_mask = sdk.segment_from_box(pixels, (40, 30, 200, 170), output_formats=["numpy"]).mask
    assert np.array_equal(by_box.mask, box_mask) and np.array_equal(many[0].mask, box_mask)


def test_errors_map_onto_the_sdk_exceptions(demo: tuple[str, Segmentor, np.ndarray]) -> None:
    base, _, _ = demo
    with Client(base) as anonymous, pytest.raises(AuthError) as missing:
        anonymous.segment_box(SAMPLE, (1, 1, 20, 20))
    assert (missing.value.status_code, missing.value.code) == (401, "unauthorized")  # type: ignore[attr-defined]
    with Client(base, api_key="wrong-key-0000000") as wrong, pytest.raises(AuthError) as forbidden:
        wrong.segment_box(SAMPLE, (1, 1, 20, 20))
    assert forbidden.value.code == "forbidden"
    with Client(base, api_key=KEY_A) as client:
        with pytest.raises(InvalidInputError) as outside:
            client.segment_box(SAMPLE, (50, 10, 20, 40))  # x1 >= x2
        assert outside.value.code == "invalid_input" and len(outside.value.request_id) == 32  # type: ignore[attr-defined]
        with pytest.raises(NotFoundError):
            client.segment_points(EmbeddedImage("0" * 32, 10, 10), [(1, 1, 1)])
        with pytest.raises(InvalidInputError, match="uint8"):
            client.segment_box(np.zeros((8, 8), dtype=np.float32), (1, 1, 4, 4))
        with pytest.raises(InvalidInputError, match=r"\(x, y, label\)"):
            client.segment_points(SAMPLE, [(1, 1)])
    with Client(f"http://127.0.0.1:{free_port()}") as nobody, pytest.raises(ServiceConnectionError):
        nobody.embed(SAMPLE)


@pytest.fixture(scope="module")
def limited() -> Iterator[str]:
    """A fake-backend server allowing one request per second."""
    with server_process({"server": {"rate_limit": "1/second"}}, fake={}) as base:
        yield base


def test_429_is_retried_after_retry_after(limited: str) -> None:
    image = png_bytes()
    with Client(limited, retry=RetryPolicy(max_retries=0)) as once:
        with Client(limited) as default:  # retries: whatever ran just before, this call gets through
            default.segment_box(image, (1, 1, 20, 20))
        with pytest.raises(RateLimitedError) as refused:
            once.segment_box(image, (1, 1, 20, 20))
    assert refused.value.status_code == 429 and refused.value.retry_after >= 1  # type: ignore[attr-defined]
    with Client(limited, retry=RetryPolicy(max_retries=3, total_s=0.5)) as short, pytest.raises(RateLimitedError):
        short.segment_box(image, (1, 1, 20, 20))  # the 1 s wait would end after total_s: not retried
    with Client(limited, retry=RetryPolicy(max_retries=5, total_s=20)) as patient:
        statuses = record_statuses(patient)
        patient.segment_box(image, (1, 1, 20, 20))
        statuses.clear()
        result = patient.segment_box(image, (1, 1, 20, 20))
    assert statuses[0] == 429 and statuses[-1] == 200
    assert result.area > 0


def test_async_client_retries_429_too(limited: str) -> None:
    image = png_bytes()

    async def run() -> tuple[list[int], Any]:
        statuses: list[int] = []

        async def record(response: Any) -> None:
            statuses.append(response.status_code)

        async with AsyncClient(limited, retry=RetryPolicy(max_retries=5, total_s=20)) as client:
            client._http.event_hooks["response"].append(record)
            await client.segment_box(image, (1, 1, 20, 20))
            statuses.clear()
            result = await client.segment_box(image, (1, 1, 20, 20))
        async with AsyncClient(limited, retry=RetryPolicy(max_retries=0)) as once:
            with pytest.raises(RateLimitedError):
                await once.segment_box(image, (1, 1, 20, 20))
        return statuses, result

    statuses, result = asyncio.run(run())
    assert statuses[0] == 429 and statuses[-1] == 200 and result.area > 0


@pytest.fixture(scope="module")
def busy() -> Iterator[str]:
    """A fake-backend server with one inference slot, no queue, and 1.5 s decodes."""
    server = {"max_concurrency": 1, "max_queue": 0, "public_metrics": True}
    with server_process({"server": server}, fake={"decode_delay_s": 1.5}) as base:
        yield base


def test_503_queue_full_is_retried_and_timeouts_are_errors(busy: str) -> None:
    image = png_bytes()
    with Client(busy, retry=RetryPolicy(max_retries=0)) as once:
        once.embed(image)  # the encoder is not delayed
        worker = threading.Thread(target=once.segment_box, args=(image, (1, 1, 20, 20)))
        worker.start()
        try:
            deadline = time.monotonic() + 30
            while metric(busy, "segmentor_inflight_requests") < 1:
                assert time.monotonic() < deadline, "the first call never started"
                time.sleep(0.01)
            with pytest.raises(ResourceExhaustedError) as full:
                once.segment_box(image, (1, 1, 20, 20))
            assert (full.value.status_code, full.value.code) == (503, "queue_full")  # type: ignore[attr-defined]
            with Client(busy, retry=RetryPolicy(max_retries=5, backoff_s=0.2, total_s=20)) as patient:
                statuses = record_statuses(patient)
                assert patient.segment_box(image, (1, 1, 20, 20)).area > 0
            assert statuses[0] == 503 and statuses[-1] == 200
        finally:
            worker.join()
    with Client(busy, timeout=0.3) as hasty, pytest.raises(RequestTimeoutError):
        hasty.segment_box(image, (1, 1, 20, 20))


def test_client_drives_the_supervision_integration(demo: tuple[str, Segmentor, np.ndarray]) -> None:
    sv = pytest.importorskip("supervision")
    from perceptra_seg.integrations.supervision import segment_detections

    base, sdk, pixels = demo
    boxes = np.array([[40.0, 30.0, 200.0, 170.0], [10.0, 10.0, 90.0, 120.0]], dtype=np.float32)
    detections = sv.Detections(xyxy=boxes, class_id=np.array([1, 2]))
    with Client(base, api_key=KEY_A) as client:
        remote = segment_detections(client, SAMPLE, detections)
        best = segment_detections(client, SAMPLE, detections, multimask=True)
    local = segment_detections(sdk, pixels, detections)
    local_best = segment_detections(sdk, pixels, detections, multimask=True)
    assert np.array_equal(remote.mask, local.mask) and np.array_equal(best.mask, local_best.mask)
    assert np.allclose(remote.data["sam_score"], local.data["sam_score"], atol=1e-5)
    assert remote.class_id.tolist() == [1, 2]
