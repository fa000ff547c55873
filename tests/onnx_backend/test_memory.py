"""No memory growth across many decoder calls of changing shape (one session set, arena reused).

The model is a tiny random SAM 1 in transformers format (32 channels; the graph structure of every SAM 1 decoder),
so that 500 calls take seconds. Tolerance: after 100 warm-up calls, which visit every shape used below so the CPU
arena has reached its size, 400 more calls may add at most 16 MiB of resident memory; a leak of one 256×256
float32 logit map per call would add 100 MiB.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import numpy as np
import pytest

from perceptra_seg import Segmentor
from perceptra_seg.backends.base import PromptBatch
from perceptra_seg.backends.export import export_onnx

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")


@pytest.fixture(scope="module")
def tiny_segmentor(tmp_path_factory: pytest.TempPathFactory) -> Segmentor:
    from transformers import SamConfig, SamModel

    root = tmp_path_factory.mktemp("tiny_sam")
    config = SamConfig(
        vision_config={
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 1,
            "global_attn_indexes": [0],
            "output_channels": 32,
            "mlp_dim": 64,
            "num_pos_feats": 16,
        },
        prompt_encoder_config={"hidden_size": 32},
        mask_decoder_config={"hidden_size": 32, "mlp_dim": 64, "iou_head_hidden_dim": 32, "num_hidden_layers": 1},
    )
    SamModel(config).save_pretrained(root / "model")
    model = {"name": "sam_v1", "variant": "vit_b", "checkpoint_path": str(root / "model")}
    export_onnx({"model": model}, root / "onnx")
    return Segmentor(
        {
            "model": model,
            "runtime": {"backend": "onnx", "device": "cpu", "num_threads": 1},
            "onnx": {"model_dir": str(root / "onnx")},
        }
    )


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def test_rss_is_flat_across_500_decoder_calls(tiny_segmentor: Segmentor, photos: dict[str, np.ndarray]) -> None:
    backend = tiny_segmentor.backend
    embedding = backend.encode(photos["coffee"])
    rng = np.random.default_rng(0)

    def call(index: int) -> None:
        count, points, multimask = 1 + index % 3, 1 + index % 2, index % 5 == 0
        batch = PromptBatch(
            points=rng.uniform(0, 1000, size=(count, points, 2)).astype(np.float32),
            labels=np.ones((count, points), dtype=np.int64),
            boxes=np.array([[100, 100, 600, 500]] * count, dtype=np.float32) if index % 4 == 0 else None,
        )
        output = backend.decode(embedding, batch, multimask=multimask)
        assert output.low_res_logits.shape == (count, 3 if multimask else 1, 256, 256)

    for index in range(100):
        call(index)
    before = _rss_bytes()
    for index in range(100, 500):
        call(index)
    growth = _rss_bytes() - before
    print(f"\nRSS growth over 400 decoder calls after warm-up: {growth / 2**20:.1f} MiB")
    assert growth < 16 * 2**20
