"""SAM 3 box prompts from the CLI and a ``/v1/ws`` session, and SAM 3's warm-up, on the reduced random-weight model of
tests/sam3_fixture.py (the session's one build).

The SDK's box answers are proven against Meta's ``predict_inst`` in test_sam3_tracker.py; here each front end's
output (the CLI's PNG and RLE, the session's RLE, decoded with PIL / pycocotools) must equal the SDK's
``Segmentor.segment`` mask for the same prompt on the same checkpoint.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from perceptra_seg import Segmentor
from perceptra_seg.exceptions import InvalidInputError

from ..sam3_fixture import SmallSam3

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),  # pycocotools
]

BOX = (120.0, 60.0, 330.0, 260.0)  # XYXY pixels of the coffee photo (600 × 400)
CLICK = (150.0, 200.0, 0)  # (x, y, label): a background click inside BOX, refining its mask


@pytest.fixture(scope="module")
def ours(small_sam3: SmallSam3) -> Segmentor:
    return Segmentor(small_sam3.config)


@pytest.fixture(scope="module")
def coffee_png(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, np.ndarray]) -> Path:
    path = tmp_path_factory.mktemp("sam3_fronts") / "coffee.png"
    Image.fromarray(photos["coffee"]).save(path)
    return path


def _rle_mask(rle: dict[str, Any]) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def test_cli_segment_box_on_sam3_matches_the_sdk(
    small_sam3: SmallSam3, ours: Segmentor, photos: dict, coffee_png: Path, tmp_path: Path
) -> None:
    """``segmentor-cli segment-box --model sam3 --checkpoint sam3.pt --box ...``: the PNG written to ``--out`` and
    the RLE printed with ``--json`` are the SDK's mask, with its score."""
    from typer.testing import CliRunner

    from perceptra_seg.cli import app as cli_app

    config = tmp_path / "sam3.yaml"  # the reduced architecture and the runtime; model and checkpoint as flags
    sections = {"model": {"architecture": small_sam3.config["model"]["architecture"]}}
    config.write_text(yaml.safe_dump({**sections, "runtime": small_sam3.config["runtime"]}), encoding="utf-8")
    out = tmp_path / "mask.png"
    args = ["segment-box", "-c", config, "--model", "sam3", "--checkpoint", small_sam3.path, "-i", coffee_png]
    run = CliRunner().invoke(cli_app, [str(a) for a in (*args, "--box", *BOX, "-o", out, "--json")])
    assert run.exit_code == 0, run.output
    expected = ours.segment(photos["coffee"], boxes=[BOX], output_formats=["numpy"])
    assert len(expected) == 1 and expected[0].mask.any()
    document = json.loads(run.stdout)
    assert document["model"]["model"] == "sam3" and len(document["results"]) == 1
    printed = document["results"][0]
    assert np.array_equal(_rle_mask(printed["rle"]), expected[0].mask)
    assert printed["score"] == pytest.approx(expected[0].score, abs=1e-6)
    written = np.asarray(Image.open(out))
    assert written.shape == expected[0].mask.shape
    assert np.array_equal(written > 0, expected[0].mask)


def test_ws_session_on_sam3_refines_a_box_like_the_sdk(
    small_sam3: SmallSam3, ours: Segmentor, photos: dict, coffee_png: Path
) -> None:
    """A ``/v1/ws`` session on sam3: a box, then a click on the same object (refined from the box's logits as
    ``mask_input``): both masks equal the SDK's refinement chain; the click without those logits gives another."""
    from perceptra_seg.service import create_app

    from ..service.helpers import build_config, running

    pixels = photos["coffee"]
    app = create_app(build_config(small_sam3.config), backend=ours.backend)
    with running(app) as client, client.websocket_connect("/v1/ws") as ws:
        ws.send_json({"type": "image", "image": base64.b64encode(coffee_png.read_bytes()).decode()})
        ready = ws.receive_json()
        assert ready["type"] == "ready" and (ready["width"], ready["height"]) == (600, 400), ready
        ws.send_json({"type": "prompt", "object": 0, "box": list(BOX)})
        boxed = ws.receive_json()
        x, y, label = CLICK
        ws.send_json({"type": "prompt", "object": 0, "points": [{"x": x, "y": y, "label": label}]})
        refined = ws.receive_json()
    first = ours.segment(pixels, [{"box": BOX}], strategy="best", output_formats=["numpy"])[0]
    prompt: dict[str, Any] = {"box": BOX, "points": [CLICK]}
    second = ours.segment(pixels, [{**prompt, "mask_input": first.low_res_logits}], strategy="best")[0]
    for reply, want in ((boxed, first), (refined, second)):
        assert reply["type"] == "mask" and reply["object"] == 0, reply
        assert np.array_equal(_rle_mask(reply["rle"]), want.mask)
        assert reply["score"] == pytest.approx(want.score, abs=1e-5)
    unrefined = ours.segment(pixels, [prompt], strategy="best", output_formats=["numpy"])[0]
    assert not np.array_equal(unrefined.mask, second.mask)


class _Spy:
    """Counts a bound method's calls (and keeps their positional arguments) while still calling it."""

    def __init__(self, method: Any) -> None:
        self.method = method
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(args)
        return self.method(*args, **kwargs)


def _spy_on(backend: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[_Spy, _Spy]:
    detect, decode = _Spy(backend.detect), _Spy(backend.decode)
    monkeypatch.setattr(backend, "detect", detect)
    monkeypatch.setattr(backend, "decode", decode)
    return detect, decode


def test_warmup_decodes_a_box_through_the_tracker(ours: Segmentor, monkeypatch: pytest.MonkeyPatch) -> None:
    """With tracker weights, warm-up runs one detector pass and one box through the tracker head."""
    detect, decode = _spy_on(ours.backend, monkeypatch)
    ours.warmup(image_size=(48, 64))
    assert len(detect.calls) == 1
    assert len(decode.calls) == 1
    _, batch = decode.calls[0]
    assert len(batch) == 1 and batch.boxes is not None and batch.points is None


def test_warmup_without_tracker_runs_the_detector_only(ours: Segmentor, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without tracker weights (the backend a detector-only file loads into: ``tracker`` is ``None``, see
    test_sam3_tracker's ``test_checkpoint_without_tracker_refuses_boxes_clearly``), warm-up runs the detector and
    no box decode, and succeeds."""
    backend = ours.backend
    monkeypatch.setattr(backend, "tracker", None)
    with pytest.raises(InvalidInputError, match="no tracker weights"):
        backend.check_prompts()
    detect, decode = _spy_on(backend, monkeypatch)
    ours.warmup(image_size=(48, 64))
    assert len(detect.calls) == 1
    assert decode.calls == []
