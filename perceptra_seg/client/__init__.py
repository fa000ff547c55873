"""Python client of the perceptra-seg REST service: the SDK's calls and result types, over HTTP.

:class:`Client` (blocking) and :class:`AsyncClient` (asyncio) speak to a running ``segmentor-cli serve`` with
httpx. They return what the SDK returns — :class:`~perceptra_seg.models.SegmentationResult` for one object,
:class:`~perceptra_seg.results.ResultSet` (with the server's ``request_id``, ``latency_ms`` and ``model_info`` on
``.info``) for many — with ``mask`` (bool ``[H, W]``) decoded from the RLE the server sent, and raise the SDK's
exceptions (see :mod:`._errors` for the mapping). HTTP 429 / 503 answers are retried per :class:`RetryPolicy`,
honouring ``Retry-After``. Coordinates are pixels of the original image: boxes ``(x1, y1, x2, y2)``, points
``(x, y, label)``. See ``docs/client.md``.
"""

from __future__ import annotations

from ._async import AsyncClient
from ._errors import RateLimitedError, RequestTimeoutError, RequestTooLargeError, ServiceConnectionError
from ._sync import Client
from ._wire import RetryPolicy

__all__ = [
    "AsyncClient",
    "Client",
    "RateLimitedError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "RetryPolicy",
    "ServiceConnectionError",
]
