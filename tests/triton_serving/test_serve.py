"""``backend: triton`` against a real serve-triton (reduced SAM 1): parity, dynamic batching, model identity."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import numpy as np
import pytest

from perceptra_seg import Segmentor, SegmentorConfig
from perceptra_seg.backends.base import PromptBatch
from perceptra_seg.exceptions import ModelLoadError

from ..onnx_backend.conftest import CASES, iou, scaled
from .conftest import TritonServer


def assert_same_results(expected: Any, actual: Any) -> None:
    assert len(actual) == len(expected) > 0
    for want, got in zip(expected, actual, strict=True):
        assert got.prompt_index == want.prompt_index
        assert got.model_info["backend"] == "triton"
        assert iou(got.mask, want.mask) >= 0.999, got.prompt_index
        assert abs(got.score - want.score) <= 1e-4, got.prompt_index


@pytest.fixture(scope="module")
def local(sam1_server: TritonServer) -> Segmentor:
    return Segmentor(sam1_server.sections)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_masks_match_the_local_torch_backend(
    sam1_server: TritonServer, local: Segmentor, photos: dict[str, np.ndarray], protocol: str
) -> None:
    remote = Segmentor(sam1_server.client_sections(protocol))
    assert remote.backend.info()["backend"] == "triton"
    for photo in ("coffee", "chelsea") if protocol == "http" else ("chelsea",):
        image = photos[photo]
        prompts = [scaled(p, image.shape[:2]) for p in CASES.values()]
        for multimask in (False, True):
            expected = local.segment(image, prompts=prompts, multimask=multimask, output_formats=["numpy"])
            actual = remote.segment(image, prompts=prompts, multimask=multimask, output_formats=["numpy"])
            assert_same_results(expected, actual)


def test_prompts_with_mask_inputs_match(sam1_server: TritonServer, local: Segmentor, photos: dict[str, Any]) -> None:
    """Refinement (mask_inputs) travels to the decoder too: two prompts with earlier logits, one call."""
    remote = Segmentor(sam1_server.client_sections())
    image = photos["coffee"]
    ours, theirs = remote.backend.encode(image), local.backend.encode(image)
    for mine, reference in zip(ours.features, theirs.features, strict=True):
        np.testing.assert_allclose(mine, reference.numpy(), atol=1e-5)
    rng = np.random.default_rng(0)
    batch = PromptBatch(
        points=np.array([[[300.0, 200.0]], [[500.0, 400.0]]], dtype=np.float32),
        labels=np.ones((2, 1), dtype=np.int64),
        mask_inputs=rng.normal(size=(2, 1, 256, 256)).astype(np.float32),
    )
    got = remote.backend.decode(ours, batch, multimask=True)
    want = local.backend.decode(theirs, batch, multimask=True)
    assert got.low_res_logits.shape == want.low_res_logits.shape == (2, 3, 256, 256)
    np.testing.assert_allclose(got.low_res_logits, want.low_res_logits, atol=1e-4)
    np.testing.assert_allclose(got.iou_scores, want.iou_scores, atol=1e-4)


def test_concurrent_encodes_are_batched_by_triton(sam1_server: TritonServer, photos: dict[str, np.ndarray]) -> None:
    """8 concurrent encoder requests on 8 different images: fewer executions than inferences, same masks."""
    remote = Segmentor({**sam1_server.client_sections(), "cache": {"enabled": False}})
    base = photos["chelsea"]
    images = [np.ascontiguousarray(np.roll(base, 37 * i, axis=1)) for i in range(8)]
    box = scaled(CASES["box"], base.shape[:2])
    sequential = [remote.segment(image, prompts=[box], output_formats=["numpy"]) for image in images]
    before = sam1_server.metrics()
    results: list[Any] = [None] * len(images)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(images))

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = remote.segment(images[index], prompts=[box], output_formats=["numpy"])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    after = sam1_server.metrics()
    key = "perceptra_encoder"
    inferences = after[("nv_inference_count", key)] - before.get(("nv_inference_count", key), 0.0)
    executions = after[("nv_inference_exec_count", key)] - before.get(("nv_inference_exec_count", key), 0.0)
    assert inferences == 8
    assert executions < inferences
    for want, got in zip(sequential, results, strict=True):
        assert_same_results(want, got)


def test_readiness_and_model_identity(sam1_server: TritonServer) -> None:
    ready = httpx.get(f"http://127.0.0.1:{sam1_server.triton['http_port']}/v2/health/ready", timeout=10)
    assert ready.status_code == 200
    config = httpx.get(f"http://127.0.0.1:{sam1_server.triton['http_port']}/v2/models/perceptra_encoder/config")
    body = config.json()
    assert body["max_batch_size"] == 8
    assert body["dynamic_batching"]["max_queue_delay_microseconds"] == 200_000
    other = sam1_server.client_sections()
    other["model"] = {"name": "sam_v2", "variant": "hiera_tiny"}
    with pytest.raises(ModelLoadError, match=r"serves another model than configured: model 'sam_v1'"):
        Segmentor(SegmentorConfig.load(None, **other))
