"""Video fixtures: Meta's ``SAM2VideoPredictor`` with random weights, its checkpoint, and a synthetic clip.

The models are hiera_tiny with a reduced input size (``SIZE``: 256 instead of 1024; the trunk, memory attention,
memory encoder and heads are Meta's hiera_tiny modules, only the feature maps are 16× smaller) so a clip tracks in
seconds on a CPU. The same checkpoint loads into our ``Sam2VideoModel`` with ``model.architecture`` giving the
reduced sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from ..conftest import _perturb, sam2_build

SIZE = 256
CONFIGS = {"sam_v2": "configs/sam2.1/sam2.1_hiera_t.yaml", "sam_v2.0": "configs/sam2/sam2_hiera_t.yaml"}


def small_architecture(size: int = SIZE) -> dict[str, Any]:
    """``model.architecture`` for hiera_tiny at a ``size``×``size`` input."""
    grid = size // 16
    return {
        "image_size": size,
        "memory_attention_rope_feat_sizes": [grid, grid],
        "vision_config": {"backbone_feature_sizes": [[grid * 4, grid * 4], [grid * 2, grid * 2], [grid, grid]]},
        "prompt_encoder_config": {"image_size": size},
    }


def build_reference_video_predictor(model: str, *, size: int = SIZE, seed: int = 5) -> Any:
    """Meta's ``SAM2VideoPredictor`` (hiera_tiny, ``size`` input) with random weights that give non-empty masks.

    * weights perturbed as in ``tests/conftest.py``; the object-score head's last bias is raised by 3 so objects
      are judged present (with Meta's initialisation every object is "absent" and every mask empty), and the mask
      head's upscaling and hypernetwork weights get more noise (std 0.05) so masks cover 10–50 % of a frame and
      change from frame to frame instead of covering ~90 % everywhere;
    * ``add_all_frames_to_correct_as_cond``: a correction on a tracked frame conditions later frames (what
      perceptra-seg does);
    * memory features are stored in bfloat16 and Meta's memory attention expects the caller to run under CUDA
      autocast; on a CPU its ``v_proj`` fails on a bfloat16 memory, so the memory is cast back to float32 on
      entry (exact: bfloat16 → float32 loses nothing; transformers does the same cast).
    """
    grid = size // 16
    overrides = [
        f"++model.image_size={size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{grid},{grid}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{grid},{grid}]",
        "++model.add_all_frames_to_correct_as_cond=true",
    ]
    torch.manual_seed(seed)
    predictor = sam2_build.build_sam2_video_predictor(
        CONFIGS[model], None, device="cpu", hydra_overrides_extra=overrides
    )
    _perturb(predictor, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        predictor.sam_mask_decoder.pred_obj_score_head.layers[2].bias.add_(3.0)
        for name, parameter in predictor.sam_mask_decoder.named_parameters():
            if name.startswith(("output_upscaling", "output_hypernetworks_mlps")):
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    inner = predictor.memory_attention.forward

    def float_memory(*args: Any, **kwargs: Any) -> Any:
        kwargs["memory"] = kwargs["memory"].float()
        return inner(*args, **kwargs)

    predictor.memory_attention.forward = float_memory
    return predictor


def write_clip(
    folder: Path, *, frames: int = 8, height: int = 180, width: int = 240, seed: int = 0
) -> list[np.ndarray]:
    """A non-square clip of two moving shapes on a noisy background, saved as ``00000.jpg``… (what Meta's loader
    reads); returns the frames as decoded back from the JPEG files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    decoded = []
    for t in range(frames):
        frame = np.full((height, width, 3), 40, np.uint8) + rng.integers(0, 20, (height, width, 3), dtype=np.uint8)
        frame[40 + 3 * t : 100 + 3 * t, 30 + 8 * t : 110 + 8 * t] = (220, 60, 60)
        frame[110:150, 150 - 5 * t : 200 - 5 * t] = (60, 200, 90)
        path = folder / f"{t:05d}.jpg"
        Image.fromarray(frame).save(path, quality=95)
        decoded.append(np.asarray(Image.open(path).convert("RGB")))
    return decoded


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    """(JPEG folder, decoded frames) of the synthetic clip."""
    folder = tmp_path_factory.mktemp("clip")
    return folder, write_clip(folder)


def tiny_architecture() -> dict[str, Any]:
    """A hiera_tiny-shaped SAM 2 video model at a 64-pixel input with a 5-block trunk: milliseconds per frame."""
    from perceptra_seg.backends.torch_backend import _deep_merge
    from perceptra_seg.registry import architecture_config

    trunk = {"blocks_per_stage": [1, 1, 2, 1], "global_attention_blocks": [3]}
    merged = _deep_merge(architecture_config("sam2", "hiera_tiny"), small_architecture(64))
    return _deep_merge(merged, {"vision_config": {"backbone_config": trunk}})


@pytest.fixture(scope="session")
def tiny_video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A transformers-format ``sam2_video`` directory (config.json + safetensors) of the tiny model, with the
    object-score bias raised so objects are judged present."""
    from transformers import Sam2VideoConfig, Sam2VideoModel

    torch.manual_seed(0)
    model = Sam2VideoModel(Sam2VideoConfig(**tiny_architecture()))
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias.add_(3.0)
    directory = tmp_path_factory.mktemp("tiny_video")
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_segmentor(tiny_video_dir: Path) -> Any:
    from perceptra_seg import Segmentor

    return Segmentor(
        model="sam_v2", variant="hiera_tiny", device="cpu", precision="fp32", checkpoint_path=tiny_video_dir
    )
