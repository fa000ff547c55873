"""Fixtures of the ONNX backend tests: each model is exported once per session, INT8/fp16 derived from that export.

* SAM 1: the reduced random-weight ViT of ``small_sam1_config`` (tests/conftest.py), seconds to export.
* SAM 2.1: a full-size random-weight hiera_tiny saved in Meta's format; exported once (the slow part).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from perceptra_seg import Segmentor, SegmentorConfig
from perceptra_seg.backends import create_backend
from perceptra_seg.backends.export import convert_export, export_onnx

from ..conftest import build_reference_sam2, save_meta_checkpoint

# Prompts in fractions of (W, H) (as in tests/parity): box, positive + negative points, box + point.
BOX = (0.25, 0.2, 0.7, 0.85)
CASES: dict[str, dict[str, Any]] = {
    "box": {"box": BOX},
    "points": {"points": [(0.45, 0.5, 1), (0.3, 0.3, 0)]},
    "box+points": {"box": BOX, "points": [(0.45, 0.5, 1), (0.65, 0.8, 0)]},
}


def scaled(prompt: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """A prompt of ``CASES`` in pixels of an image of ``size = (H, W)``."""
    height, width = size
    out: dict[str, Any] = {}
    if "box" in prompt:
        x1, y1, x2, y2 = prompt["box"]
        out["box"] = (round(x1 * width), round(y1 * height), round(x2 * width), round(y2 * height))
    if "points" in prompt:
        out["points"] = [(round(x * width), round(y * height), label) for x, y, label in prompt["points"]]
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def onnx_config(
    torch_config: dict[str, Any], model_dir: Path, onnx: dict[str, Any] | None = None, **runtime: Any
) -> dict[str, Any]:
    """The torch backend's config sections, switched to the ONNX backend reading ``model_dir``."""
    config = {key: dict(value) for key, value in torch_config.items()}
    config["runtime"] = {**config.get("runtime", {}), "backend": "onnx", **runtime}
    config["onnx"] = {"model_dir": str(model_dir), **(onnx or {})}
    return config


class MemoBackend:
    """Delegates to a backend but encodes each distinct image once per test session (encoders are the slow part)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.family = inner.family
        self.fingerprint = inner.fingerprint
        self.mask_size = inner.mask_size
        self._embeddings: dict[str, Any] = {}

    def encode(self, image: np.ndarray) -> Any:
        key = f"{image.shape}:{hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()}"
        if key not in self._embeddings:
            self._embeddings[key] = self.inner.encode(image)
        return self._embeddings[key]

    def decode(self, embedding: Any, batch: Any, *, multimask: bool) -> Any:
        return self.inner.decode(embedding, batch, multimask=multimask)

    def check_prompts(self) -> None:
        self.inner.check_prompts()

    def info(self) -> dict[str, Any]:
        return self.inner.info()

    def close(self) -> None:
        """Shared between tests: closing a Segmentor leaves the inner backend alone."""


class Exported:
    """One model: its torch config, its fp32 export, and torch / ONNX Segmentors that share encodings across tests."""

    def __init__(self, name: str, config: dict[str, Any], torch_backend: Any, fp32_dir: Path) -> None:
        self.name = name
        self.config = config
        self.fp32_dir = fp32_dir
        self.torch_backend = MemoBackend(torch_backend)
        self.torch = Segmentor(config, backend=self.torch_backend)
        self._onnx: Segmentor | None = None

    @property
    def onnx(self) -> Segmentor:
        """The fp32 ONNX Segmentor (created on first use)."""
        if self._onnx is None:
            self._onnx = self.memoized(self.fp32_dir)
        return self._onnx

    @property
    def onnx_backend(self) -> MemoBackend:
        backend: MemoBackend = self.onnx.backend  # type: ignore[assignment]
        return backend

    def segmentor(self, model_dir: Path | None = None, onnx: dict[str, Any] | None = None, **runtime: Any) -> Segmentor:
        """A fresh ONNX Segmentor reading ``model_dir`` (default: the fp32 export)."""
        return Segmentor(onnx_config(self.config, model_dir or self.fp32_dir, onnx, **runtime))

    def memoized(self, model_dir: Path, onnx: dict[str, Any] | None = None, **runtime: Any) -> Segmentor:
        """An ONNX Segmentor whose backend encodes each image once."""
        config = onnx_config(self.config, model_dir, onnx, **runtime)
        return Segmentor(config, backend=MemoBackend(create_backend(SegmentorConfig.load(None, **config))))


@pytest.fixture(scope="session")
def sam1_export(
    small_sam1_config: dict[str, Any], small_segmentor: Segmentor, tmp_path_factory: pytest.TempPathFactory
) -> Exported:
    directory = tmp_path_factory.mktemp("onnx_sam1") / "fp32"
    export_onnx(small_sam1_config, directory)
    return Exported("sam1", small_sam1_config, small_segmentor.backend, directory)


@pytest.fixture(scope="session")
def sam2_export(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    root = tmp_path_factory.mktemp("onnx_sam2")
    model = build_reference_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", seed=4)
    checkpoint = save_meta_checkpoint(model, root / "sam2.1_hiera_tiny.pt", sam2=True)
    del model
    config = {
        "model": {"name": "sam_v2", "variant": "hiera_tiny", "checkpoint_path": str(checkpoint)},
        # fp32 pinned: the reference of the agreement tests (precision auto would pick bf16 for hiera_tiny on a CPU
        # with native bf16, and fp32 elsewhere)
        "runtime": {"device": "cpu", "precision": "fp32"},
    }
    export_onnx(config, root / "fp32")
    return Exported("sam2", config, create_backend(SegmentorConfig.load(None, **config)), root / "fp32")


@pytest.fixture(scope="session", params=["sam1", "sam2"])
def exported(request: pytest.FixtureRequest) -> Exported:
    """Both families, one after the other."""
    fixture: Exported = request.getfixturevalue(f"{request.param}_export")
    return fixture


@pytest.fixture(scope="session")
def derive(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``derive(exported, quantize="int8")`` / ``derive(exported, fp16=True)``: a converted copy of an fp32 export,
    made once per session."""
    root = tmp_path_factory.mktemp("onnx_derived")
    made: dict[str, Path] = {}

    def make(exported: Exported, **options: Any) -> Path:
        key = exported.name + "".join(f"-{name}={value}" for name, value in sorted(options.items()))
        if key not in made:
            convert_export(exported.fp32_dir, root / key, **options)
            made[key] = root / key
        return made[key]

    return make
