"""The blocking client, :class:`Client`, and what both clients share: headers, answer handling, retry loop steps."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx
import numpy as np

from ..exceptions import SegmentorError
from ..models import EmbeddedImage, Prompt, SegmentationResult
from ..results import ResultSet
from ._calls import auto as auto_call
from ._calls import box as box_call
from ._calls import embed as embed_call
from ._calls import many as many_call
from ._calls import points as points_call
from ._errors import RequestTimeoutError, ServiceConnectionError, error_from_response
from ._wire import Call, RetryPolicy, retry_after_seconds, retry_delay

__all__ = ["Client"]

Formats = Sequence[str] | str | None


def headers_for(api_key: str | None) -> dict[str, str]:
    """``Authorization: Bearer <key>`` (the service also takes ``X-API-Key``) when a key is given."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def transport_error(exc: httpx.HTTPError) -> SegmentorError:
    """A client-side failure (no HTTP answer) as an SDK error."""
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeoutError(f"no answer within the client's timeout: {type(exc).__name__}")
    return ServiceConnectionError(f"cannot reach the service: {type(exc).__name__}: {exc}")


def outcome(response: httpx.Response) -> tuple[dict[str, Any] | None, SegmentorError | None]:
    """The JSON body of a 200 answer, or the error any other answer stands for."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 200 and isinstance(body, dict):
        return body, None
    if response.status_code == 200:
        return None, error_from_response(502, None, None)
    return None, error_from_response(
        response.status_code, body, retry_after_seconds(response.headers.get("Retry-After"))
    )


def wait_for(policy: RetryPolicy, attempt: int, error: SegmentorError, started: float) -> float | None:
    """Seconds to wait before retrying after ``error``, or ``None`` to raise it."""
    return retry_delay(
        policy,
        attempt,
        int(getattr(error, "status_code", 0)),
        error.code,
        getattr(error, "retry_after", None),
        time.monotonic() - started,
    )


class Client:
    """A blocking client of the perceptra-seg REST service, returning the SDK's result types.

    Example::

        from perceptra_seg.client import Client

        with Client("http://127.0.0.1:8000", api_key="...") as client:
            result = client.segment_box("photo.jpg", (40, 30, 200, 180))  # (x1, y1, x2, y2) pixels
            result.mask  # bool [H, W]

    Args:
        base_url: the service's root URL, e.g. ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer <key>``; ``None`` when the server has no keys.
        timeout: seconds per request (connect, each read, each write; an ``httpx.Timeout`` for finer control);
            a request that exceeds it raises :class:`~perceptra_seg.client.RequestTimeoutError`.
        retry: when HTTP 429 / 503 answers are retried (:class:`~perceptra_seg.client.RetryPolicy`).

    Errors are the SDK's (:class:`~perceptra_seg.exceptions.InvalidInputError`, ``NotFoundError``, ...; see
    :mod:`perceptra_seg.client`), with ``status_code``, ``code``, ``request_id`` and ``retry_after`` attached.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers_for(api_key), timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _send(self, call: Call) -> Any:
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                response = self._http.post(call.path, json=call.body)
            except httpx.HTTPError as exc:
                raise transport_error(exc) from None
            body, error = outcome(response)
            if error is None:
                assert body is not None
                return call.parse(body)
            delay = wait_for(self.retry, attempt, error, started)
            if delay is None:
                raise error
            time.sleep(delay)
            attempt += 1

    def embed(self, image: Any) -> EmbeddedImage:
        """Encode ``image`` once on the server; pass the handle as ``image`` to the segment calls (same API key)."""
        result: EmbeddedImage = self._send(embed_call(image))
        return result

    def segment_box(
        self,
        image: Any,
        box: Sequence[float],
        *,
        output_formats: Formats = None,
        multimask: bool = False,
        mask_input: np.ndarray | None = None,
        return_logits: bool = False,
    ) -> SegmentationResult:
        """The mask inside one ``(x1, y1, x2, y2)`` box. ``mask_input``: a previous result's ``low_res_logits``
        (float32 ``[L, L]``) to refine; ``return_logits`` fills ``low_res_logits`` for the next refinement."""
        result: SegmentationResult = self._send(
            box_call(image, box, output_formats, multimask, mask_input, return_logits)
        )
        return result

    def segment_points(
        self,
        image: Any,
        points: Iterable[Any],
        *,
        output_formats: Formats = None,
        multimask: bool = False,
        mask_input: np.ndarray | None = None,
        return_logits: bool = False,
    ) -> SegmentationResult:
        """One object from ``(x, y, label)`` clicks (1 = foreground, 0 = background); refinement as
        :meth:`segment_box`."""
        result: SegmentationResult = self._send(
            points_call(image, points, output_formats, multimask, mask_input, return_logits)
        )
        return result

    def segment(
        self,
        image: Any,
        prompts: Iterable[Prompt | Mapping[str, Any]] | None = None,
        boxes: Iterable[Sequence[float]] | None = None,
        points: Iterable[Any] | None = None,
        *,
        strategy: str = "all",
        output_formats: Formats = None,
        multimask: bool = False,
    ) -> ResultSet:
        """Every prompt on one image, as :meth:`Segmentor.segment <perceptra_seg.Segmentor.segment>` (without
        ``mask_input``; refine with :meth:`segment_points` / :meth:`segment_box`)."""
        result: ResultSet = self._send(many_call(image, prompts, boxes, points, strategy, output_formats, multimask))
        return result

    def segment_auto(self, image: Any, *, output_formats: Formats = None, **options: Any) -> ResultSet:
        """Segment everything, as :meth:`Segmentor.generate <perceptra_seg.Segmentor.generate>` (``options`` named
        as in Meta's generators: ``points_per_side``, ``pred_iou_thresh``, ...)."""
        result: ResultSet = self._send(auto_call(image, output_formats, options))
        return result
