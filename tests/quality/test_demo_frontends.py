"""The demo model's quality through the other front ends: tiling windows, the REST service and the ONNX backend.

Each front end is scored on the same held-out scenes as the SDK (mean IoU against ground truth) and must give the
SDK's quality: a window pasted back at the wrong offset, x/y swapped in a window, a mis-decoded RLE or an ONNX
graph that drifts from torch would all cost IoU here.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from perceptra_seg import Segmentor, SegmentorConfig
from perceptra_seg.demo.evaluation import ObjectScore, Predictor, evaluate, mean_iou, segmentor_predictor
from perceptra_seg.demo.scenes import Scene, SceneObject

SCENES = 16


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def mosaic(scenes: list[Scene], gap: int) -> Scene:
    """Four equally sized scenes in a 2×2 grid, ``gap`` pixels of flat grey apart, their objects moved with them."""
    height, width = scenes[0].size
    image = np.full((2 * height + gap, 2 * width + gap, 3), 128, np.uint8)
    objects: list[SceneObject] = []
    for index, scene in enumerate(scenes):
        y0, x0 = (index // 2) * (height + gap), (index % 2) * (width + gap)
        image[y0 : y0 + height, x0 : x0 + width] = scene.image
        for obj in scene.objects:
            mask = np.zeros(image.shape[:2], bool)
            mask[y0 : y0 + height, x0 : x0 + width] = obj.mask
            objects.append(SceneObject(obj.kind, mask, obj.color))
    return Scene(image, tuple(objects))


def demo_app(demo_segmentor: Any) -> Any:
    """The REST app serving the already loaded demo model."""
    pytest.importorskip("fastapi")
    from perceptra_seg.service import create_app

    config = SegmentorConfig.load(None, model={"name": "demo"}, logging={"level": "WARNING"})
    return create_app(config, backend=demo_segmentor.backend)


@pytest.fixture(scope="module")
def sdk_scores(demo_predictor: Predictor, heldout_scenes: list[Scene]) -> dict[str, list[ObjectScore]]:
    """The SDK's per-object scores on the first :data:`SCENES` held-out scenes, per prompt kind."""
    return {kind: evaluate(demo_predictor, heldout_scenes[:SCENES], kind) for kind in ("box", "point")}


def test_tiling_windows_keep_quality(
    demo_segmentor: Any, heldout_scenes: list[Scene], sdk_scores: dict[str, list[ObjectScore]]
) -> None:
    """768-px mosaics of four scenes answered from 256-px windows around the prompts: the SDK's masks.

    Windows of one scene's prompts overlap and merge; the 256-px gaps keep the scenes' windows apart, so every
    mosaic needs at least four encoder calls, each on a crop whose masks are pasted back at the crop's offset.
    Compared object by object: a wrong paste offset, swapped axes or a wrong window scale would move nearly every
    object's IoU, so the median change must stay tiny; a window shows the model less context than the whole scene,
    which changes the answer for a few objects (measured: 9 of 59 boxes move by more than 0.1), so the mean may
    drop a little.
    """
    config = SegmentorConfig.load(
        None,
        model={"name": "demo"},
        tiling={"enabled": True, "min_image_side": 512, "window_size": 256, "margin": 16, "max_windows": 16},
    )
    tiled = Segmentor(config, backend=demo_segmentor.backend)
    mosaics = [mosaic(heldout_scenes[i : i + 4], gap=256) for i in range(0, SCENES, 4)]
    for kind in ("box", "point"):
        scores = evaluate(segmentor_predictor(tiled), mosaics, kind)
        reference = sdk_scores[kind]
        changes = np.array([t.iou - r.iou for t, r in zip(scores, reference, strict=True)])  # same objects, in order
        assert float(np.median(np.abs(changes))) <= 0.02, kind
        assert mean_iou(scores) >= mean_iou(reference) - 0.06, kind
        if kind == "box":  # (click windows may reuse the box windows' cached embeddings)
            assert tiled.encoder_calls >= 4 * len(mosaics)


def test_rest_service_keeps_quality(
    demo_segmentor: Any, heldout_scenes: list[Scene], sdk_scores: dict[str, list[ObjectScore]]
) -> None:
    app = demo_app(demo_segmentor)
    from pycocotools import mask as mask_utils

    from ..service.helpers import running

    with running(app) as client:

        def predict(image: np.ndarray, prompts: list[dict[str, Any]]) -> list[np.ndarray]:
            body = {
                "image": base64.b64encode(encode_png(image)).decode("ascii"),
                "prompts": [{"box": list(p["box"])} for p in prompts],
                "output_formats": ["rle"],
            }
            response = client.post("/v1/segment", json=body)
            assert response.status_code == 200, response.text
            rles = [r["rle"] for r in response.json()["results"]]
            return [mask_utils.decode({"size": r["size"], "counts": r["counts"].encode()}).astype(bool) for r in rles]

        rest = mean_iou(evaluate(predict, heldout_scenes[:SCENES], "box"))
    assert rest == pytest.approx(mean_iou(sdk_scores["box"]), abs=1e-9)  # lossless transport: the very same masks


def test_rest_service_refuses_an_image_too_elongated_for_the_model(demo_segmentor: Any) -> None:
    app = demo_app(demo_segmentor)
    from ..service.helpers import running

    strip = {"image": base64.b64encode(encode_png(np.zeros((1, 2049, 3), np.uint8))).decode(), "box": [0, 0, 99, 1]}
    fits = {**strip, "image": base64.b64encode(encode_png(np.zeros((1, 2048, 3), np.uint8))).decode()}
    with running(app) as client:
        refused = client.post("/v1/segment/box", json=strip)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "invalid_input" and "2049x1" in error["message"] and "2048:1" in error["message"]
        served = client.post("/v1/segment/box", json={**fits, "output_formats": ["rle"]})  # the limit, still served
        assert served.status_code == 200, served.text
        assert served.json()["rle"]["size"] == [1, 2048]


def test_onnx_backend_keeps_quality(
    tmp_path: Path, heldout_scenes: list[Scene], sdk_scores: dict[str, list[ObjectScore]]
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from perceptra_seg.backends.export import export_onnx

    export_onnx(None, tmp_path / "onnx", model="demo")
    config = SegmentorConfig.load(
        None, model={"name": "demo"}, runtime={"backend": "onnx"}, onnx={"model_dir": str(tmp_path / "onnx")}
    )
    with Segmentor(config) as onnx_segmentor:
        for kind in ("box", "point"):
            scores = evaluate(segmentor_predictor(onnx_segmentor), heldout_scenes[:SCENES], kind)
            assert mean_iou(scores) == pytest.approx(mean_iou(sdk_scores[kind]), abs=0.005)
