"""Encoder batching in the REST service: concurrent ``/v1/embed`` requests for different images share one encoder
run (``runtime.max_batch_size``), and each answer is its own image's."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from perceptra_seg.backends.base import ImageEmbedding
from perceptra_seg.service import create_app

from .helpers import FakeBackend, build_config, running


class BatchingFakeBackend(FakeBackend):
    """:class:`FakeBackend` that also encodes batches, recording the image sizes of each run."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[tuple[int, int]]] = []

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[ImageEmbedding]:
        self.batches.append([(int(image.shape[0]), int(image.shape[1])) for image in images])
        return [self.encode(image) for image in images]


def _png(height: int, width: int) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, dtype=np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_concurrent_embed_requests_are_encoded_in_one_batch() -> None:
    backend = BatchingFakeBackend()
    config = build_config(runtime={"max_batch_size": 4, "max_batch_wait_ms": 10_000}, server={"max_concurrency": 4})
    sizes = [(40, 60), (50, 30), (64, 64), (20, 90)]
    with running(create_app(config, backend=backend)) as client:
        barrier = threading.Barrier(len(sizes))

        def embed(size: tuple[int, int]) -> dict:
            barrier.wait()
            response = client.post("/v1/embed", json={"image": _png(*size)})
            assert response.status_code == 200, response.text
            return response.json()

        with ThreadPoolExecutor(len(sizes)) as pool:
            bodies = list(pool.map(embed, sizes))
    assert [(b["height"], b["width"]) for b in bodies] == sizes
    assert len({b["image_id"] for b in bodies}) == len(sizes)
    assert [sorted(batch) for batch in backend.batches] == [sorted(sizes)]
