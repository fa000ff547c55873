"""export-triton: every config.pbtxt parses against Triton's model-config schema, and the ONNX files run in ONNX
Runtime with the shapes the configs declare, giving the torch backend's features, logits and scores.

The bundled tritonserver has no onnxruntime backend, so the repository is checked this way rather than served.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from perceptra_seg.backends.base import PromptBatch
from perceptra_seg.backends.onnx_backend import decoder_feed
from perceptra_seg.cli.app import app
from perceptra_seg.preprocessing import preprocess_image

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")
ort = pytest.importorskip("onnxruntime")

PREFIX = "sam_v1_vit_b"
NUMPY = {
    model_config_pb2.TYPE_FP32: np.float32,
    model_config_pb2.TYPE_INT64: np.int64,
}


@pytest.fixture(scope="module")
def repository(small_sam1_config: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triton_repository")
    config = root / "config.yaml"
    import yaml

    config.write_text(yaml.safe_dump({**small_sam1_config, "triton": {"max_batch_size": 4, "max_queue_delay_ms": 7.5}}))
    out = root / "models"
    result = CliRunner().invoke(app, ["export-triton", "--config", str(config), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(result.stdout)["models"]) == sorted(
        f"{PREFIX}_{name}" for name in ("encoder", "decoder_single", "decoder_multi")
    )
    return out


def parse(path: Path) -> Any:
    config = model_config_pb2.ModelConfig()
    text_format.Parse(path.read_text(), config)
    return config


def feed(inputs: Any, values: dict[str, np.ndarray], batch: int | None = None) -> dict[str, np.ndarray]:
    """``values`` checked against the declared inputs: names, dtypes and every fixed dimension."""
    assert {i.name for i in inputs} == set(values)
    for declared in inputs:
        value = values[declared.name]
        assert value.dtype == NUMPY[declared.data_type], declared.name
        shape = value.shape[1:] if batch is not None else value.shape
        assert len(shape) == len(declared.dims), declared.name
        assert all(d in (-1, s) for d, s in zip(declared.dims, shape, strict=True)), (declared.name, shape)
    return values


def check_outputs(outputs: Any, values: list[np.ndarray], batch: int | None = None) -> None:
    for declared, value in zip(outputs, values, strict=True):
        shape = value.shape[1:] if batch is not None else value.shape
        assert all(d in (-1, s) for d, s in zip(declared.dims, shape, strict=True)), (declared.name, shape)


def test_configs_parse_and_graphs_run_as_declared(
    repository: Path, small_segmentor: Any, photos: dict[str, np.ndarray]
) -> None:
    configs = {path.parent.name: parse(path) for path in sorted(repository.glob("*/config.pbtxt"))}
    assert set(configs) == {f"{PREFIX}_{name}" for name in ("encoder", "decoder_single", "decoder_multi")}
    for name, config in configs.items():
        assert config.name == name
        assert config.backend == "onnxruntime"
        assert (repository / name / "1" / "model.onnx").is_file()
    encoder = configs[f"{PREFIX}_encoder"]
    assert encoder.max_batch_size == 4
    assert encoder.dynamic_batching.max_queue_delay_microseconds == 7500
    assert configs[f"{PREFIX}_decoder_multi"].max_batch_size == 0

    torch_backend = small_segmentor.backend
    images = [photos["coffee"], photos["chelsea"]]
    pixels = np.concatenate([preprocess_image(image, "sam1")[0] for image in images])
    session = ort.InferenceSession(str(repository / f"{PREFIX}_encoder" / "1" / "model.onnx"))
    values = feed(encoder.input, {"pixel_values": pixels}, batch=2)
    (features,) = session.run([o.name for o in encoder.output], values)  # two images in one call
    check_outputs(encoder.output, [features], batch=2)
    for index, image in enumerate(images):
        np.testing.assert_allclose(features[index : index + 1], torch_backend.encode(image).features[0], atol=1e-4)

    embedding = torch_backend.encode(images[1])
    batch = PromptBatch(
        points=np.array([[[300.0, 200.0]], [[500.0, 400.0]]], dtype=np.float32),
        labels=np.ones((2, 1), dtype=np.int64),
        boxes=np.array([[100.0, 100.0, 600.0, 500.0], [50.0, 80.0, 900.0, 700.0]], dtype=np.float32),
    )
    for graph, multimask in (("decoder_single", False), ("decoder_multi", True)):
        config = configs[f"{PREFIX}_{graph}"]
        session = ort.InferenceSession(str(repository / f"{PREFIX}_{graph}" / "1" / "model.onnx"))
        inputs = {"image_embeddings": features[1:2], **decoder_feed(batch, "sam1", 256)}
        logits, scores = session.run([o.name for o in config.output], feed(config.input, inputs))
        check_outputs(config.output, [logits, scores])
        want = torch_backend.decode(embedding, batch, multimask=multimask)
        np.testing.assert_allclose(logits, want.low_res_logits, atol=1e-3)
        np.testing.assert_allclose(scores, want.iou_scores, atol=1e-4)
