"""SAM 3 concept segmentation parity with Meta's ``sam3`` package (``Sam3Processor``) on a reduced random-weight
model: same checkpoint file, same photo, same phrase → the same set of instances (count equal, each matched at
IoU ≥ 0.99, scores within 1e-3), for two phrases sharing one image encoding, and for an exemplar box.

The model (tests/sam3_fixture.py) has a 2-block ViT and a 2-layer text encoder; the detector, geometry encoder and
mask head are full size. Each phrase's threshold is put in the widest gap between the reference's scores among its
top 4-40 instances, so that no instance sits within reach of the tolerance.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from perceptra_seg import Segmentor
from perceptra_seg.utils.masks import rle_to_mask

from ..sam3_fixture import EXEMPLAR, PHRASES, SmallSam3, small_sam3  # noqa: F401 - the fixture

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _threshold(scores: torch.Tensor) -> float:
    """Midpoint of the widest gap between consecutive scores among ranks 4..40 (descending)."""
    ordered = scores.sort(descending=True).values
    gaps = ordered[3:40] - ordered[4:41]
    at = int(gaps.argmax()) + 3
    assert float(gaps.max()) > 5e-4  # far wider than the score error (about 1e-7): no instance can cross it
    return float(ordered[at] + ordered[at + 1]) / 2


def _check(results: list, scores: torch.Tensor, masks: torch.Tensor, threshold: float) -> None:
    keep = torch.nonzero(scores > threshold).flatten()
    keep = keep[torch.argsort(scores[keep], descending=True)]
    assert len(results) == len(keep) >= 4
    for result, index in zip(results, keep.tolist(), strict=True):
        reference = masks[index].numpy()
        union = np.logical_or(result.mask, reference).sum()
        iou = np.logical_and(result.mask, reference).sum() / union if union else 1.0
        assert iou >= 0.99, (
            index,
            iou,
            int(reference.sum()),
            int(result.mask.sum()),
            int(np.logical_xor(result.mask, reference).sum()),
        )
        assert abs(result.score - float(scores[index])) <= 1e-3


@pytest.fixture(scope="module")
def ours(small_sam3: SmallSam3) -> Segmentor:  # noqa: F811
    return Segmentor(small_sam3.config)


def test_text_prompts_match_meta_and_share_one_encoding(
    small_sam3: SmallSam3,  # noqa: F811
    ours: Segmentor,
    photos: dict,
) -> None:
    image = photos["coffee"]
    handle = ours.embed(image)
    for phrase in PHRASES:
        scores, masks = small_sam3.answers[phrase]
        results = ours.segment_text(handle, phrase, threshold=_threshold(scores), output_formats=["numpy", "rle"])
        _check(results, scores, masks, _threshold(scores))
        assert {r.label for r in results} == {phrase} and {r.prompt_index for r in results} == {0}
        assert results[0].rle is not None and results[0].rle["size"] == [image.shape[0], image.shape[1]]
    assert ours.encoder_calls == 1  # both phrases on the one embedding


def test_exemplar_box_matches_meta(small_sam3: SmallSam3, ours: Segmentor, photos: dict) -> None:  # noqa: F811
    """One positive exemplar box and no phrase (Meta sends the phrase "visual"): the geometry encoder's RoI pooling."""
    scores, masks = small_sam3.answers["exemplar"]
    threshold = _threshold(scores)
    results = ours.segment_text(
        photos["coffee"], None, exemplars=[EXEMPLAR], threshold=threshold, output_formats=["numpy"]
    )
    _check(results, scores, masks, threshold)
    assert all(r.label is None for r in results)


def test_rest_and_cli_answer_like_meta(
    small_sam3: SmallSam3,  # noqa: F811
    ours: Segmentor,
    photos: dict,
    tmp_path: Path,
) -> None:
    """``POST /v1/segment/text`` (the service warms SAM 3 up with one detector pass) and ``segmentor-cli
    segment-text`` on the real model: the same instances as Meta's for the first phrase."""
    from PIL import Image
    from typer.testing import CliRunner

    from perceptra_seg.cli import app as cli_app
    from perceptra_seg.service import create_app

    from ..service.helpers import build_config, running

    phrase = PHRASES[0]
    scores, masks = small_sam3.answers[phrase]
    threshold = _threshold(scores)
    image_path = tmp_path / "coffee.png"
    Image.fromarray(photos["coffee"]).save(image_path)
    body = {"image": base64.b64encode(image_path.read_bytes()).decode(), "text": phrase, "threshold": threshold}
    with running(create_app(build_config(small_sam3.config), backend=ours.backend)) as client:
        response = client.post("/v1/segment/text", json=body)
    assert response.status_code == 200, response.text
    _check([_Decoded(r) for r in response.json()["results"]], scores, masks, threshold)

    config = tmp_path / "sam3.yaml"
    config.write_text(yaml.safe_dump(small_sam3.config), encoding="utf-8")
    out = tmp_path / "instances.json"
    args = ["segment-text", "-c", str(config), "-i", str(image_path), "-t", phrase, "--threshold", str(threshold)]
    run = CliRunner().invoke(cli_app, [*args, "-o", str(out)])
    assert run.exit_code == 0, run.output
    written = json.loads(out.read_text())["results"]
    assert {r["label"] for r in written} == {phrase}
    _check([_Decoded(r) for r in written], scores, masks, threshold)


class _Decoded:
    """A JSON result as :func:`_check` reads results: ``mask`` (from its RLE) and ``score``."""

    def __init__(self, document: dict) -> None:
        self.mask = rle_to_mask(document["rle"])
        self.score = float(document["score"])


def test_segment_auto_text_writes_segment_texts_instances_as_coco(
    small_sam3: SmallSam3,  # noqa: F811
    ours: Segmentor,
    photos: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``segmentor-cli segment-auto --text A --text B`` (on this module's loaded model, with an empty embedding cache):
    one encoding for the image; the COCO records (decoded with pycocotools) are ``segment_text``'s instances of each
    phrase, ``category_id`` = the phrase's position, scores kept; the categories file names the phrases."""
    import contextlib

    from PIL import Image
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from typer.testing import CliRunner

    from perceptra_seg.cli import app as cli_app
    from perceptra_seg.cli.batch import stable_image_id
    from perceptra_seg.cli.common import CommonOptions

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(photos["coffee"]).save(folder / "coffee.png")
    threshold = _threshold(small_sam3.answers[PHRASES[0]][0])
    fresh = Segmentor(small_sam3.config, backend=ours.backend)  # the loaded model, no cached embedding
    monkeypatch.setattr(CommonOptions, "segmentor", lambda self: contextlib.nullcontext(fresh))
    config = tmp_path / "sam3.yaml"
    config.write_text(yaml.safe_dump(small_sam3.config), encoding="utf-8")
    out = tmp_path / "concepts.json"
    phrase_args = [a for p in PHRASES for a in ("--text", p)]
    args = ["segment-auto", "-c", str(config), "-i", str(folder), *phrase_args, "--threshold", str(threshold)]
    run = CliRunner().invoke(cli_app, [*args, "-o", str(out), "--json"])
    assert run.exit_code == 0, run.output
    assert fresh.encoder_calls == 1  # both phrases on one encoding
    summary = json.loads(run.stdout)
    categories = json.loads((tmp_path / "concepts.categories.json").read_text())["categories"]
    assert categories == [{"id": i + 1, "name": p} for i, p in enumerate(PHRASES)]
    assert summary["categories"] == str(tmp_path / "concepts.categories.json")
    records = json.loads(out.read_text())
    assert summary["results_written"] == len(records)
    assert {r["image_id"] for r in records} == {stable_image_id("coffee.png")}
    for category, phrase in enumerate(PHRASES, start=1):
        want = fresh.segment_text(photos["coffee"], phrase, threshold=threshold, output_formats=["numpy"])
        got = [r for r in records if r["category_id"] == category]
        assert len(got) == len(want) >= 1
        for record, result in zip(got, want, strict=True):
            rle = {"size": record["segmentation"]["size"], "counts": record["segmentation"]["counts"].encode()}
            np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), result.mask)
            assert record["score"] == pytest.approx(result.score, abs=1e-6)
    assert fresh.encoder_calls == 1 and len(records) == sum(r["category_id"] in (1, 2) for r in records)
    scores, masks = small_sam3.answers[PHRASES[0]]  # and Meta's instances for the first phrase
    first = [_Decoded({"rle": r["segmentation"], "score": r["score"]}) for r in records if r["category_id"] == 1]
    _check(first, scores, masks, threshold)
    truth = COCO()
    height, width = photos["coffee"].shape[:2]
    images = [{"id": stable_image_id("coffee.png"), "height": height, "width": width}]
    truth.dataset = {"images": images, "annotations": [], "categories": categories}
    truth.createIndex()
    loaded = truth.loadRes(str(out))
    assert len(loaded.getAnnIds(catIds=[2])) == sum(r["category_id"] == 2 for r in records)
