"""The client's pure parts: retry decisions, Retry-After parsing, error envelopes → SDK exceptions, and what it
sends for images and prompts (no server)."""

from __future__ import annotations

import base64
import email.utils
import time

import numpy as np
import pytest

from perceptra_seg.cancel import OperationCancelledError
from perceptra_seg.client import RateLimitedError, RequestTimeoutError, RequestTooLargeError, RetryPolicy
from perceptra_seg.client._errors import error_from_response
from perceptra_seg.client._wire import (
    formats_field,
    image_fields,
    prompt_field,
    result_set,
    retry_after_seconds,
    retry_delay,
)
from perceptra_seg.exceptions import (
    AuthError,
    BackendError,
    ImageTooLargeError,
    InvalidInputError,
    ModelLoadError,
    NotFoundError,
    ResourceExhaustedError,
)
from perceptra_seg.models import EmbeddedImage
from perceptra_seg.utils.logits import encode_logits
from perceptra_seg.utils.masks import mask_to_rle

POLICY = RetryPolicy(max_retries=3, backoff_s=0.5, max_backoff_s=4.0, total_s=10.0)


@pytest.mark.parametrize(
    ("attempt", "status", "code", "retry_after", "elapsed", "expected"),
    [
        (0, 429, "rate_limited", 2.0, 0.0, 2.0),  # Retry-After wins
        (0, 503, "queue_full", None, 0.0, 0.5),  # no header: backoff_s * 2**attempt
        (2, 503, "queue_full", None, 0.0, 2.0),
        (1, 429, "rate_limited", 60.0, 0.0, 4.0),  # capped at max_backoff_s
        (3, 429, "rate_limited", 1.0, 0.0, None),  # max_retries used up
        (0, 429, "rate_limited", 3.0, 8.0, None),  # would end after total_s
        (0, 503, "model_load_error", 1.0, 0.0, None),  # a missing checkpoint does not heal
        (0, 400, "invalid_input", None, 0.0, None),
        (0, 504, "timeout", None, 0.0, None),
    ],
)
def test_retry_delay(
    attempt: int, status: int, code: str, retry_after: float | None, elapsed: float, expected: float | None
) -> None:
    assert retry_delay(POLICY, attempt, status, code, retry_after, elapsed) == expected


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (retry_after_seconds(later) or 0) <= 31
    with pytest.raises(InvalidInputError):
        RetryPolicy(max_retries=-1)


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "invalid_input", InvalidInputError),
        (422, "validation_error", InvalidInputError),
        (413, "image_too_large", ImageTooLargeError),
        (413, "request_too_large", RequestTooLargeError),
        (404, "not_found", NotFoundError),
        (401, "unauthorized", AuthError),
        (403, "forbidden", AuthError),
        (429, "rate_limited", RateLimitedError),
        (503, "queue_full", ResourceExhaustedError),
        (503, "model_load_error", ModelLoadError),
        (504, "timeout", RequestTimeoutError),
        (499, "cancelled", OperationCancelledError),
        (500, "internal_error", BackendError),
        (404, "some_future_code", NotFoundError),  # unknown code: by status
        (418, "teapot", InvalidInputError),
    ],
)
def test_error_codes_map_to_sdk_classes(status: int, code: str, cls: type[Exception]) -> None:
    body = {"error": {"code": code, "message": "what went wrong", "request_id": "ab" * 16}}
    error = error_from_response(status, body, 2.0)
    assert type(error) is cls
    assert (error.code, error.status_code, error.request_id, error.retry_after) == (code, status, "ab" * 16, 2.0)  # type: ignore[attr-defined]
    assert "what went wrong" in str(error)


def test_error_without_envelope() -> None:
    error = error_from_response(502, None, None)
    assert isinstance(error, BackendError) and error.code == "http_error"


def test_images_and_prompts_on_the_wire() -> None:
    pixels = np.zeros((5, 7, 3), dtype=np.uint8)
    fields, size = image_fields(pixels)
    assert size == (5, 7) and base64.b64decode(fields["image"]).startswith(b"\x89PNG")
    assert image_fields(EmbeddedImage("f" * 32, 7, 5)) == ({"image_id": "f" * 32}, (5, 7))
    assert image_fields("https://example.org/a.png") == ({"image": "https://example.org/a.png"}, None)
    assert image_fields("data:image/png;base64,AAAA") == ({"image": "data:image/png;base64,AAAA"}, None)
    with pytest.raises(InvalidInputError, match="cannot read"):
        image_fields("/nonexistent/image.png")
    with pytest.raises(InvalidInputError, match="unsupported"):
        image_fields(3.5)
    assert formats_field(["numpy", "rle", "png"]) == ["rle", "png"]
    assert formats_field("polygons") == ["polygons"]
    assert prompt_field({"box": (1, 2, 3, 4), "points": [(1, 2, 0)]}) == {
        "box": [1.0, 2.0, 3.0, 4.0],
        "points": [{"x": 1.0, "y": 2.0, "label": 0}],
    }
    with pytest.raises(InvalidInputError, match="mask_input"):
        prompt_field({"box": (1, 2, 3, 4), "mask_input": np.zeros((4, 4), np.float32)})
    with pytest.raises(InvalidInputError, match="square"):
        encode_logits(np.zeros((4, 5), np.float32))


def test_answer_becomes_a_result_set() -> None:
    mask = np.zeros((6, 9), dtype=bool)
    mask[1:4, 2:7] = True
    logits = np.arange(16, dtype=np.float32).reshape(4, 4)
    body = {
        "request_id": "cd" * 16,
        "latency_ms": 12.5,
        "model_info": {"model": "demo"},
        "results": [
            {"prompt_index": 0, "score": 0.75, "area": 15, "bbox": [2, 1, 7, 4], "rle": mask_to_rle(mask)},
        ],
        "low_res_logits": encode_logits(logits),
    }
    results = result_set(body, None, single=False)
    assert results.image_size == (6, 9) and results.info.request_id == "cd" * 16 and results.info.latency_ms == 12.5
    assert np.array_equal(results[0].mask, mask) and results[0].bbox == (2, 1, 7, 4)
    single = result_set({**body, **body["results"][0]}, (6, 9), single=True)[0]
    assert single.low_res_logits is not None and np.array_equal(single.low_res_logits, logits)
    assert single.request_id == "cd" * 16 and single.model_info == {"model": "demo"}
