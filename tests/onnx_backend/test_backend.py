"""OnnxBackend details: provider choice, prompt layout, session options, error paths."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from perceptra_seg import BackendError, ConfigError, InvalidInputError, Segmentor
from perceptra_seg.backends.base import ImageEmbedding, PromptBatch
from perceptra_seg.backends.onnx_backend import OnnxBackend, decoder_feed, select_providers

from .conftest import Exported, onnx_config

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


@pytest.mark.parametrize(
    ("device", "available", "providers", "label"),
    [
        ("cpu", [CUDA, CPU], [CPU], "cpu"),
        ("auto", [CPU], [CPU], "cpu"),
        ("auto", [CUDA, CPU], [(CUDA, {"device_id": 0}), CPU], "cuda:0"),
        ("cuda", [CUDA, CPU], [(CUDA, {"device_id": 0}), CPU], "cuda:0"),
        ("cuda:1", [CUDA, CPU], [(CUDA, {"device_id": 1}), CPU], "cuda:1"),
    ],
)
def test_providers_follow_the_device(device: str, available: list[str], providers: list[object], label: str) -> None:
    assert select_providers(device, available) == (providers, label)


def test_cuda_without_cuda_provider_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="'cuda:0' requested but ONNX Runtime offers no CUDAExecutionProvider"):
        select_providers("cuda:0", ["CPUExecutionProvider"])


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this machine has the CUDA execution provider")
def test_segmentor_with_cuda_device_fails_without_fallback(sam1_export: Exported) -> None:
    with pytest.raises(ConfigError, match="install onnxruntime-gpu or use device='cpu'"):
        Segmentor(onnx_config(sam1_export.config, sam1_export.fp32_dir, device="cuda"))


def test_decoder_feed_orders_tokens_like_the_torch_models() -> None:
    points = np.array([[[10.0, 20.0], [30.0, 40.0]]], dtype=np.float32)
    labels = np.array([[1, 0]])
    box = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    only_points = decoder_feed(PromptBatch(points=points, labels=labels), "sam1", 256)
    assert only_points["point_labels"].tolist() == [[1, 0, -1]]
    assert only_points["point_coords"].tolist() == [[[10, 20], [30, 40], [0, 0]]]
    assert only_points["mask_input"].shape == (1, 1, 256, 256) and only_points["has_mask_input"].tolist() == [0.0]
    assert decoder_feed(PromptBatch(boxes=box), "sam1", 256)["point_labels"].tolist() == [[2, 3]]
    assert decoder_feed(PromptBatch(boxes=box), "sam2", 256)["point_labels"].tolist() == [[2, 3, -1]]
    both = decoder_feed(PromptBatch(points=points, labels=labels, boxes=box), "sam2", 256)
    assert both["point_labels"].tolist() == [[1, 0, 2, 3, -1]]
    assert both["point_coords"].tolist() == [[[10, 20], [30, 40], [1, 2], [3, 4], [0, 0]]]
    assert both["point_coords"].dtype == np.float32 and both["point_labels"].dtype == np.int64
    masks = np.full((1, 1, 256, 256), 2.0, dtype=np.float32)
    with_mask = decoder_feed(PromptBatch(boxes=box, mask_inputs=masks), "sam1", 256)
    assert with_mask["has_mask_input"].tolist() == [1.0] and with_mask["mask_input"].max() == 2.0


def test_sessions_use_configured_threads_and_arena(sam1_export: Exported) -> None:
    segmentor = sam1_export.segmentor(num_threads=1)
    backend = segmentor.backend
    assert isinstance(backend, OnnxBackend)
    sessions = backend._sessions
    assert set(sessions) == {"encoder", "decoder_single", "decoder_multi"}
    for name, session in sessions.items():
        options = session.get_session_options()
        assert options.intra_op_num_threads == 1
        assert options.enable_cpu_mem_arena
        assert options.enable_mem_pattern == (name == "encoder")
    info = backend.info()
    assert info["backend"] == "onnx" and info["providers"] == ["CPUExecutionProvider"] and info["device"] == "cpu"
    assert backend.fingerprint.split("|")[:5] == ["sam_v1", "vit_b", "onnx", "cpu", "fp32"]
    default = sam1_export.onnx.backend.inner
    assert default._sessions["encoder"].get_session_options().intra_op_num_threads == 0  # ORT's own default


def test_logs_the_providers_in_use(sam1_export: Exported, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="perceptra_seg.backends.onnx_backend"):
        sam1_export.segmentor()
    assert any("providers in use: CPUExecutionProvider" in r.getMessage() for r in caplog.records)


def test_bad_calls_give_clear_errors(sam1_export: Exported) -> None:
    segmentor = sam1_export.segmentor()
    backend = segmentor.backend
    with pytest.raises(InvalidInputError, match="empty prompt batch"):
        backend.decode(
            ImageEmbedding((4, 4), (4, 4), (np.zeros((1, 256, 64, 64), np.float32),), 0), PromptBatch(), multimask=False
        )
    foreign = ImageEmbedding((4, 4), (4, 4), ("not", "numpy"), 0)
    with pytest.raises(BackendError, match="not produced by the onnx backend"):
        backend.decode(foreign, PromptBatch(boxes=np.array([[0, 0, 2, 2]], np.float32)), multimask=False)
    wrong_shape = ImageEmbedding((4, 4), (4, 4), (np.zeros((1, 8, 8, 8), np.float32),), 0)
    with pytest.raises(BackendError, match="ONNX decoder_single failed"):
        backend.decode(wrong_shape, PromptBatch(boxes=np.array([[0, 0, 2, 2]], np.float32)), multimask=False)
    segmentor.close()
    with pytest.raises(BackendError, match="closed"):
        backend.encode(np.zeros((8, 8, 3), np.uint8))


def test_environment_selects_backend_and_export(
    sam1_export: Exported, monkeypatch: pytest.MonkeyPatch, photos: dict[str, np.ndarray]
) -> None:
    monkeypatch.setenv("SEGMENTOR_RUNTIME_BACKEND", "onnx")
    monkeypatch.setenv("SEGMENTOR_ONNX_MODEL_DIR", str(sam1_export.fp32_dir))
    monkeypatch.setenv("SEGMENTOR_ONNX_AUTO_EXPORT", "false")
    segmentor = Segmentor({"model": sam1_export.config["model"], "runtime": {"device": "cpu"}})
    assert isinstance(segmentor.backend, OnnxBackend)
    assert segmentor.config.onnx.auto_export is False
    box = [(40, 30, 250, 220)]
    expected = sam1_export.onnx.segment(photos["coffee"], boxes=box)[0]
    assert np.array_equal(segmentor.segment(photos["coffee"], boxes=box)[0].mask, expected.mask)


def test_set_backend_switches_between_torch_and_onnx(sam1_export: Exported, photos: dict[str, np.ndarray]) -> None:
    config = {**sam1_export.config, "onnx": {"model_dir": str(sam1_export.fp32_dir)}}
    segmentor = Segmentor(config, backend="onnx")
    box = [(60, 50, 300, 250)]
    onnx_result = segmentor.segment(photos["chelsea"], boxes=box)[0]
    segmentor.set_backend("torch")
    torch_result = segmentor.segment(photos["chelsea"], boxes=box)[0]
    assert (onnx_result.model_info["backend"], torch_result.model_info["backend"]) == ("onnx", "torch")
    assert (
        np.logical_and(onnx_result.mask, torch_result.mask).sum()
        >= 0.98 * np.logical_or(onnx_result.mask, torch_result.mask).sum()
    )
