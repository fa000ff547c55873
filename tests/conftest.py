"""Shared fixtures: reference models with random weights saved in Meta's format, photos, and a fake backend.

The reference packages are imported first (with the torchvision stand-in), before anything imports transformers.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from reference_support import import_more_reference_packages, import_reference_packages

# SAM 3's reduced model, built once per session for every module that asks for it (a module importing the fixture
# itself would get its own build)
from .sam3_fixture import small_sam3  # noqa: F401
from .sam3_video_fixture import busy_sam3_video, small_sam3_video  # noqa: F401

segment_anything, sam2_build, sam2_predictor = import_reference_packages()
segment_anything_hq, mobile_sam = import_more_reference_packages()

# A reduced SAM 1 image encoder (same ViT code path as vit_b, fewer and narrower blocks) for fast tests.
SMALL_SAM1 = {"encoder_embed_dim": 64, "encoder_depth": 2, "encoder_num_heads": 2, "encoder_global_attn_indexes": [1]}
SMALL_SAM1_ARCHITECTURE = {
    "vision_config": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "global_attn_indexes": [1]}
}


def _perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Add noise to every parameter so zero-initialised ones (positional embeddings, rel-pos) are exercised too."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return model.eval()


def build_reference_sam1(variant: str | dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """Meta's ``Sam`` with random weights: a registry variant name or ``_build_sam`` keyword arguments."""
    torch.manual_seed(seed)
    if isinstance(variant, str):
        model = segment_anything.sam_model_registry[variant]()
    else:
        from segment_anything.build_sam import _build_sam

        model = _build_sam(checkpoint=None, **variant)
    return _perturb(model, seed)


def build_reference_sam2(config_name: str, seed: int = 0) -> torch.nn.Module:
    """Meta's ``SAM2Base`` from one of its packaged configs, with random weights."""
    torch.manual_seed(seed)
    model = sam2_build.build_sam2(config_name, None, device="cpu")
    return _perturb(model, seed)


def save_meta_checkpoint(model: torch.nn.Module, path: Path, *, sam2: bool) -> Path:
    """Save in Meta's layout: SAM 1 a flat state dict, SAM 2 ``{"model": state_dict}``."""
    state = model.state_dict()
    torch.save({"model": state} if sam2 else state, path)
    return path


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real photographs shipped with scikit-image (RGB uint8), non-square on purpose."""
    from skimage import data

    return {"coffee": data.coffee(), "chelsea": data.chelsea()}


@pytest.fixture(scope="session")
def small_sam1(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """A reduced SAM 1 reference model and its Meta-format checkpoint file."""
    model = build_reference_sam1(SMALL_SAM1, seed=1)
    path = save_meta_checkpoint(model, tmp_path_factory.mktemp("small_sam1") / "sam_small.pth", sam2=False)
    return model, path


@pytest.fixture(scope="session")
def small_sam1_config(small_sam1: tuple[torch.nn.Module, Path]) -> dict[str, Any]:
    """Config sections that load the reduced SAM 1 checkpoint on CPU."""
    return {
        "model": {
            "name": "sam_v1",
            "variant": "vit_b",
            "checkpoint_path": str(small_sam1[1]),
            "architecture": SMALL_SAM1_ARCHITECTURE,
        },
        "runtime": {"device": "cpu"},
    }


@pytest.fixture(scope="session")
def small_segmentor(small_sam1_config: dict[str, Any]) -> Any:
    from perceptra_seg import Segmentor

    return Segmentor(small_sam1_config)


class CountingBackend:
    """Wraps a real backend and counts encoder calls (optionally slowed down, to widen race windows)."""

    def __init__(self, inner: Any, delay_s: float = 0.0) -> None:
        self.inner = inner
        self.family = inner.family
        self.fingerprint = inner.fingerprint
        self.mask_size = inner.mask_size
        self.encode_calls = 0
        self.delay_s = delay_s

    def encode(self, image: np.ndarray) -> Any:
        import time

        self.encode_calls += 1
        time.sleep(self.delay_s)
        return self.inner.encode(image)

    def decode(self, embedding: Any, batch: Any, *, multimask: bool) -> Any:
        return self.inner.decode(embedding, batch, multimask=multimask)

    def check_prompts(self) -> None:
        self.inner.check_prompts()

    def info(self) -> dict[str, Any]:
        return self.inner.info()

    def close(self) -> None:
        """The wrapped backend is shared between tests; closing the wrapper leaves it alone."""


@pytest.fixture
def counting_segmentor(small_segmentor: Any) -> Callable[..., Any]:
    """Factory: a fresh Segmentor (own cache) over the shared small model, with an encoder-call counter."""
    from perceptra_seg import Segmentor

    def make(delay_s: float = 0.0, **sections: Any) -> Any:
        backend = CountingBackend(small_segmentor.backend, delay_s)
        config = small_segmentor.config.model_dump()
        for section, values in sections.items():
            config[section].update(values)
        return Segmentor(config, backend=backend)

    return make


def reference_modules() -> tuple[ModuleType, ModuleType]:
    return segment_anything, sam2_predictor


class BoxOracleBackend:
    """A fake backend whose 'decoder' answers exactly the prompt's box (or a disc around each positive point).

    Logits are +10 inside the prompt region and -10 outside, drawn in the 256×256 low-resolution frame, so the mask
    that comes out of the whole pipeline is the prompt region seen through SAM's geometry: any error in coordinate
    scaling, window offsets, x/y order or upsampling shows up as a misplaced mask. ``encoded_sizes`` records the
    ``(H, W)`` of every image the encoder was given.
    """

    fingerprint = "box-oracle"
    mask_size = 256

    def __init__(self, family: str = "sam2") -> None:
        self.family = family
        self.encoded_sizes: list[tuple[int, int]] = []

    def encode(self, image: np.ndarray) -> Any:
        from perceptra_seg.backends.base import ImageEmbedding
        from perceptra_seg.preprocessing import resized_input_size

        size = (int(image.shape[0]), int(image.shape[1]))
        self.encoded_sizes.append(size)
        return ImageEmbedding(size, resized_input_size(size, self.family), features=None, nbytes=1)  # type: ignore[arg-type]

    def decode(self, embedding: Any, batch: Any, *, multimask: bool) -> Any:
        from perceptra_seg.backends.base import DecoderOutput

        count, k = len(batch), 3 if multimask else 1
        logits = np.full((count, k, 256, 256), -10.0, dtype=np.float32)
        centres = (np.arange(256) + 0.5) * 4.0  # low-res pixel centres in the 1024 frame
        for row in range(count):
            if batch.boxes is not None:
                x1, y1, x2, y2 = batch.boxes[row]
                inside = np.outer((centres >= y1) & (centres <= y2), (centres >= x1) & (centres <= x2))
            else:
                inside = np.zeros((256, 256), dtype=bool)
                for (x, y), label in zip(batch.points[row], batch.labels[row], strict=True):
                    if label == 1:
                        inside |= (centres[:, None] - y) ** 2 + (centres[None, :] - x) ** 2 <= 40.0**2
            logits[row, :, inside] = 10.0
        return DecoderOutput(logits, np.full((count, k), 0.9, dtype=np.float32))

    def check_prompts(self) -> None:
        """Boxes and points are always answered."""

    def info(self) -> dict[str, Any]:
        return {"model": "box-oracle", "backend": "fake"}

    def close(self) -> None:
        pass


#: The pixel decoders ``load_image`` dispatches to; every decode or validation of an image enters exactly one.
IMAGE_DECODERS = ("decode_image_bytes", "decode_stream", "array_to_rgb", "pil_to_rgb_array")


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How often ``load_image`` entered each pixel decoder while the test ran (by decoder name)."""
    from perceptra_seg.utils import image_io

    counts: Counter[str] = Counter()

    def counting(name: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return inner(*args, **kwargs)

        return wrapper

    for name in IMAGE_DECODERS:
        monkeypatch.setattr(image_io, name, counting(name, getattr(image_io, name)))
    return counts


def build_reference_sam_hq(variant: str | dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """The authors' SAM-HQ ``Sam`` with random weights: a registry variant name or ``_build_sam`` keyword arguments."""
    torch.manual_seed(seed)
    if isinstance(variant, str):
        model = segment_anything_hq.sam_model_registry[variant]()
    else:
        from segment_anything_hq.build_sam import _build_sam

        model = _build_sam(checkpoint=None, **variant)
    return _perturb(model, seed)


@pytest.fixture(scope="session")
def small_sam_hq(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path, dict[str, Any]]:
    """A reduced SAM-HQ reference model (the SMALL_SAM1 ViT), its file in the authors' format and the config
    sections that load it on CPU in fp32."""
    model = build_reference_sam_hq(SMALL_SAM1, seed=5)
    path = save_meta_checkpoint(model, tmp_path_factory.mktemp("small_sam_hq") / "sam_hq_small.pth", sam2=False)
    config = {
        "model": {"name": "sam_hq", "checkpoint_path": str(path), "architecture": SMALL_SAM1_ARCHITECTURE},
        "runtime": {"device": "cpu", "precision": "fp32"},
    }
    return model, path, config


# A reduced TinyViT for MobileSAM (same code path as vit_t: MBConv stage, three attention stages, the last merge with
# stride 1 — the authors' code picks stride 1 by the 320-wide output, so that width stays).
SMALL_TINY_VIT = {"embed_dims": [32, 64, 96, 320], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 3, 10]}


def build_reference_mobile_sam(tiny_vit: dict[str, Any] | None = None, seed: int = 0) -> torch.nn.Module:
    """MobileSAM's ``Sam`` (``mobile_sam`` package) with random weights and random batch-norm statistics;
    ``tiny_vit`` overrides the ``vit_t`` encoder's ``TinyViT`` arguments (``None``: the released ``vit_t``)."""
    from mobile_sam.build_sam import build_sam_vit_t
    from mobile_sam.modeling import TinyViT

    torch.manual_seed(seed)
    model = build_sam_vit_t()
    if tiny_vit is not None:
        encoder = {"embed_dims": [64, 128, 160, 320], "depths": [2, 2, 6, 2], "num_heads": [2, 4, 5, 10]}
        model.image_encoder = TinyViT(
            img_size=1024,
            window_sizes=[7, 7, 14, 7],
            drop_path_rate=0.0,
            layer_lr_decay=0.8,
            **{**encoder, **tiny_vit},
        )
    model = _perturb(model, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model.eval()


@pytest.fixture(scope="session")
def small_mobile_sam(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path, dict[str, Any]]:
    """A reduced MobileSAM reference model, its file in the authors' format (``mobile_sam.pt`` layout) and the config
    sections that load it on CPU in fp32."""
    model = build_reference_mobile_sam(SMALL_TINY_VIT, seed=7)
    path = save_meta_checkpoint(model, tmp_path_factory.mktemp("small_mobile_sam") / "mobile_sam.pt", sam2=False)
    config = {
        "model": {"name": "mobile_sam", "checkpoint_path": str(path), "architecture": {"tiny_vit": SMALL_TINY_VIT}},
        "runtime": {"device": "cpu", "precision": "fp32"},
    }
    return model, path, config


# EdgeTAM with a narrower, one-block-per-stage RepViT trunk; the neck, prompt encoder, mask decoder and memory
# modules are full size. The full-size trunk's layout and outputs were checked against timm (closing note).
SMALL_EDGETAM = {"repvit": {"embed_dims": [16, 32, 64, 128], "depths": [1, 1, 1, 1]}}


@pytest.fixture(scope="session")
def small_edgetam(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any]]:
    """A random-weight EdgeTAM file in the authors' format (``edgetam.pt`` layout), the transformers-named
    ``EdgeTamVideoModel`` state dict it was made from, and the config sections that load it on CPU in fp32."""
    from edgetam_support import write_edgetam_checkpoint

    path = tmp_path_factory.mktemp("small_edgetam") / "edgetam.pt"
    state = write_edgetam_checkpoint(path, SMALL_EDGETAM, seed=3)
    config = {
        "model": {"name": "edgetam", "checkpoint_path": str(path), "architecture": SMALL_EDGETAM},
        "runtime": {"device": "cpu", "precision": "fp32"},
    }
    return path, state, config


# One CI run of the whole suite (1257 passed) ended with a segmentation fault while the interpreter was shutting down,
# after pytest had printed its summary: a native library's destructor (the suite loads torch, ONNX Runtime, OpenVINO
# and Ray into one process) running during interpreter finalisation. No test result is involved, so once pytest has
# finished, the process leaves with pytest's own exit status and skips the native destructors.
_SESSION_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _SESSION_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _SESSION_STATUS and not hasattr(config, "workerinput"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_SESSION_STATUS[-1])
