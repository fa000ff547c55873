"""``/v1/ws`` on the packaged demo model: each click's mask equals the SDK's refinement chain
(``segment_from_points(..., mask_input=previous.low_res_logits)``), in process and against a real server process."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from perceptra_seg import Segmentor
from perceptra_seg.service import create_app

from .helpers import build_config, running, server_process

SAMPLE = Path(__file__).resolve().parents[2] / "perceptra_seg" / "assets" / "sample.png"
DEMO = {"model": {"name": "demo"}, "runtime": {"device": "cpu"}}
#: One object refined by three clicks, then a second object from a box plus a click.
CLICKS = [
    (0, [(120, 90, 1)], None),
    (0, [(200, 140, 0)], None),
    (0, [(150, 100, 1)], None),
    (1, [(330, 210, 1)], (280, 160, 420, 290)),
]


@pytest.fixture(scope="module")
def sdk() -> Iterator[Segmentor]:
    with Segmentor(model="demo", device="cpu") as segmentor:
        yield segmentor


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.asarray(Image.open(SAMPLE).convert("RGB"))


def sdk_chain(sdk: Segmentor, pixels: np.ndarray) -> list[Any]:
    """The masks the SDK gives for :data:`CLICKS`, each object's previous logits passed back as ``mask_input``."""
    points: dict[int, list[tuple[float, float, int]]] = {}
    boxes: dict[int, Any] = {}
    logits: dict[int, np.ndarray] = {}
    out = []
    for k, clicks, box in CLICKS:
        points.setdefault(k, []).extend(clicks)
        if box is not None:
            boxes[k] = box
        prompt = {"points": points[k], "box": boxes.get(k), "mask_input": logits.get(k)}
        prompt = {key: value for key, value in prompt.items() if value is not None}
        result = sdk.segment(pixels, [prompt], strategy="best", output_formats=["numpy"])[0]
        logits[k] = result.low_res_logits
        out.append(result)
    return out


def decoded(reply: dict[str, Any]) -> np.ndarray:
    rle = dict(reply["rle"])
    rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


def prompt_messages() -> list[dict[str, Any]]:
    return [
        {
            "type": "prompt",
            "object": k,
            "points": [{"x": x, "y": y, "label": label} for x, y, label in clicks],
            **({"box": list(box)} if box is not None else {}),
        }
        for k, clicks, box in CLICKS
    ]


def check_chain(replies: list[dict[str, Any]], expected: list[Any]) -> None:
    assert [r["type"] for r in replies] == ["mask"] * len(expected)
    for reply, result in zip(replies, expected, strict=True):
        assert np.array_equal(decoded(reply), result.mask)
        assert reply["score"] == pytest.approx(result.score, abs=1e-5)
        assert reply["area"] == result.area and reply["bbox"] == list(result.bbox)
    # refinement matters here: the last click of object 0 without the previous logits gives another mask
    assert not np.array_equal(decoded(replies[2]), expected[1].mask)


def test_clicks_refine_like_the_sdk_in_process(sdk: Segmentor, pixels: np.ndarray) -> None:
    expected = sdk_chain(sdk, pixels)
    plain = sdk.segment_from_points(pixels, [p for _, c, _ in CLICKS[:3] for p in c], output_formats=["numpy"])
    assert not np.array_equal(plain.mask, expected[2].mask)  # without mask_input the third mask differs
    app = create_app(build_config(**DEMO))
    with running(app) as client, client.websocket_connect("/v1/ws") as ws:
        ws.send_json({"type": "image", "image": base64.b64encode(SAMPLE.read_bytes()).decode()})
        ready = ws.receive_json()
        assert (ready["width"], ready["height"]) == (pixels.shape[1], pixels.shape[0])
        replies = []
        for message in prompt_messages():
            ws.send_json(message)
            replies.append(ws.receive_json())
        check_chain(replies, expected)
        ws.send_json({"type": "undo"})
        assert ws.receive_json()["type"] == "deleted"  # object 1 had one prompt
        ws.send_json({"type": "prompt", "object": 0, "points": [{"x": 60, "y": 60, "label": 1}]})
        refined = ws.receive_json()
    # after the undo, object 0 still refines from its third mask
    again = sdk.segment(
        pixels,
        [
            {
                "points": [p for _, c, _ in CLICKS[:3] for p in c] + [(60, 60, 1)],
                "mask_input": expected[2].low_res_logits,
            }
        ],
        strategy="best",
        output_formats=["numpy"],
    )[0]
    assert np.array_equal(decoded(refined), again.mask)


def test_clicks_refine_like_the_sdk_against_a_server_process(sdk: Segmentor, pixels: np.ndarray) -> None:
    from websockets.sync.client import connect

    expected = sdk_chain(sdk, pixels)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    with server_process({**DEMO, "server": {"api_keys": ["live-key"]}}) as base:
        url = base.replace("http://", "ws://") + "/v1/ws"
        with connect(url, additional_headers={"X-API-Key": "live-key"}) as ws:
            ws.send(buffer.getvalue())  # binary frame: the image upload
            assert json.loads(ws.recv(timeout=60))["type"] == "ready"
            replies = []
            for message in prompt_messages():
                ws.send(json.dumps(message))
                replies.append(json.loads(ws.recv(timeout=60)))
            check_chain(replies, expected)
            ws.send(json.dumps({"type": "export"}))
            export = json.loads(ws.recv(timeout=60))
        assert export["objects"] == [0, 1] and len(export["annotations"]) == 2
        with connect(url) as ws:  # no key in the headers: the first message must authenticate
            ws.send(json.dumps({"type": "image_id", "image_id": "0" * 32}))
            assert json.loads(ws.recv(timeout=60))["code"] == "unauthorized"
            with pytest.raises(Exception) as closed:
                ws.recv(timeout=60)
        assert getattr(closed.value, "rcvd", None) is not None and closed.value.rcvd.code == 1008
