"""``/v1/ws`` protocol, errors and limits, in process (FastAPI's TestClient) over the constant fake backend.

The masks themselves are compared with the SDK's refinement chain on a real model in ``test_ws_model.py``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from starlette.websockets import WebSocketDisconnect

from perceptra_seg.service import create_app

from .helpers import KEY_A, KEY_B, FakeBackend, auth, b64_png, build_config, png_bytes, running

HEIGHT, WIDTH = 48, 64


@contextmanager
def session(make: Callable[..., Any], headers: dict[str, str] | None = None, **sections: Any) -> Iterator[Any]:
    with make(**sections) as client, client.websocket_connect("/v1/ws", headers=dict(headers or {})) as ws:
        yield ws


def ask(ws: Any, message: dict[str, Any]) -> dict[str, Any]:
    ws.send_json(message)
    reply = ws.receive_json()
    assert isinstance(reply, dict)
    return reply


def open_image(ws: Any) -> dict[str, Any]:
    reply = ask(ws, {"type": "image", "image": b64_png(HEIGHT, WIDTH)})
    assert reply["type"] == "ready", reply
    return reply


def decoded(reply: dict[str, Any]) -> np.ndarray:
    rle = dict(reply["rle"])
    rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


def click(x: float, y: float, label: int = 1) -> dict[str, Any]:
    return {"x": x, "y": y, "label": label}


def test_session_messages_from_image_to_export(fake_client: Callable[..., Any], fake_backend: FakeBackend) -> None:
    with session(fake_client) as ws:
        ready = open_image(ws)
        assert (ready["width"], ready["height"]) == (WIDTH, HEIGHT) and len(ready["image_id"]) == 32
        assert fake_backend.encode_calls == 2  # warm-up + this image

        first = ask(ws, {"type": "prompt", "object": 0, "points": [click(30, 20)]})
        assert first["type"] == "mask" and first["object"] == 0
        mask = decoded(first)
        assert mask.shape == (HEIGHT, WIDTH) and int(mask.sum()) == first["area"] > 0
        ys, xs = np.nonzero(mask)
        assert first["bbox"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert first["score"] == pytest.approx(0.9) and first["latency_ms"] > 0
        assert first["points"] == [click(30, 20)] and first["box"] is None

        second = ask(ws, {"type": "prompt", "object": 0, "points": [click(5, 5, 0)]})
        assert second["points"] == [click(30, 20), click(5, 5, 0)]  # clicks accumulate per object
        boxed = ask(ws, {"type": "prompt", "object": 7, "box": [2, 3, 40, 30]})
        assert boxed["object"] == 7 and boxed["box"] == [2, 3, 40, 30] and boxed["points"] == []

        export = ask(ws, {"type": "export", "coco_image_id": 42, "category_id": 3})
        assert export["type"] == "export" and export["objects"] == [0, 7]
        records = export["annotations"]
        assert [(r["image_id"], r["category_id"]) for r in records] == [(42, 3), (42, 3)]
        coco_mask = mask_utils.decode(
            {**records[0]["segmentation"], "counts": records[0]["segmentation"]["counts"].encode()}
        )
        assert np.array_equal(coco_mask.astype(bool), decoded(second))

        assert ask(ws, {"type": "delete_object", "object": 7}) == {"type": "deleted", "object": 7}
        restored = ask(ws, {"type": "undo"})  # brings object 7 back
        assert restored["type"] == "mask" and restored["object"] == 7 and restored["box"] == [2, 3, 40, 30]
        assert ask(ws, {"type": "undo"}) == {"type": "deleted", "object": 7}  # its prompt undone: gone again
        back = ask(ws, {"type": "undo"})  # object 0 back to its first click
        assert back["object"] == 0 and back["points"] == [click(30, 20)]
        assert ask(ws, {"type": "reset"}) == {"type": "reset"}
        assert ask(ws, {"type": "export"})["objects"] == []
        assert ask(ws, {"type": "undo"})["code"] == "nothing_to_undo"


def test_binary_frame_uploads_the_image(fake_client: Callable[..., Any]) -> None:
    with session(fake_client) as ws:
        ws.send_bytes(png_bytes(30, 50))
        ready = ws.receive_json()
        assert ready["type"] == "ready" and (ready["width"], ready["height"]) == (50, 30)
        assert ask(ws, {"type": "prompt", "object": 1, "points": [click(10, 10)]})["rle"]["size"] == [30, 50]


def test_image_id_from_rest_is_scoped_to_the_key(fake_backend: FakeBackend) -> None:
    app = create_app(build_config(server={"api_keys": [KEY_A, KEY_B]}), backend=fake_backend)
    with running(app) as client:
        embedded = client.post("/v1/embed", json={"image": b64_png(HEIGHT, WIDTH)}, headers=auth(KEY_A)).json()
        with client.websocket_connect("/v1/ws", headers=auth(KEY_A)) as ws:
            ready = ask(ws, {"type": "image_id", "image_id": embedded["image_id"]})
            assert ready == {"type": "ready", "image_id": embedded["image_id"], "width": WIDTH, "height": HEIGHT}
            assert ask(ws, {"type": "prompt", "object": 0, "points": [click(3, 3)]})["type"] == "mask"
        with client.websocket_connect("/v1/ws", headers={"X-API-Key": KEY_B}) as ws:
            assert ask(ws, {"type": "image_id", "image_id": embedded["image_id"]})["code"] == "not_found"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json", "invalid_message"),
        ('["a list"]', "invalid_message"),
        ('{"type": "dance"}', "invalid_message"),
        ('{"type": "prompt", "points": []}', "invalid_message"),  # no object
        ('{"type": "prompt", "object": 0, "points": [{"x": 1, "y": 2, "label": 5}]}', "invalid_message"),
        ('{"type": "prompt", "object": 0, "box": [1, 2, 3]}', "invalid_message"),
        ('{"type": "prompt", "object": -1, "points": [{"x": 1, "y": 2}]}', "invalid_message"),
        ('{"type": "undo", "extra": 1}', "invalid_message"),
        ('{"type": "prompt", "object": 0}', "invalid_input"),  # neither points nor box
        ('{"type": "prompt", "object": 0, "box": [30, 30, 10, 10]}', "invalid_input"),  # x1 > x2
        ('{"type": "prompt", "object": 0, "points": [{"x": 900, "y": 2}]}', "invalid_input"),  # outside the image
        ('{"type": "delete_object", "object": 3}', "not_found"),
        ('{"type": "auth", "api_key": "late"}', "invalid_message"),  # only as the first message
        ('{"type": "image", "image": "bm90IGFuIGltYWdl"}', "invalid_input"),  # base64 of text
    ],
)
def test_a_bad_message_gets_an_error_and_the_session_stays_open(
    fake_client: Callable[..., Any], message: str, code: str
) -> None:
    with session(fake_client) as ws:
        open_image(ws)
        ws.send_text(message)
        error = ws.receive_json()
        assert error["type"] == "error" and error["code"] == code and error["message"]
        assert ask(ws, {"type": "prompt", "object": 0, "points": [click(3, 3)]})["type"] == "mask"


def test_prompt_and_export_before_an_image_are_errors(fake_client: Callable[..., Any]) -> None:
    with session(fake_client) as ws:
        assert ask(ws, {"type": "prompt", "object": 0, "points": [click(1, 1)]})["code"] == "no_image"
        assert ask(ws, {"type": "export"})["code"] == "no_image"
        assert ask(ws, {"type": "image_id", "image_id": "0" * 32})["code"] == "not_found"
        open_image(ws)


def closed_with(ws: Any) -> tuple[int, dict[str, Any] | None]:
    """Read until the server closes; the close code and the last message before it."""
    last = None
    with pytest.raises(WebSocketDisconnect) as closed:
        while True:
            last = ws.receive_json()
    return closed.value.code, last


@pytest.mark.parametrize(
    ("headers", "first", "reply", "code"),
    [
        (auth(KEY_A), {"type": "image", "image": b64_png()}, "ready", None),
        ({"X-API-Key": KEY_B}, {"type": "image", "image": b64_png()}, "ready", None),
        (None, {"type": "auth", "api_key": KEY_A}, "authenticated", None),
        (auth("wrong-key"), {"type": "image", "image": b64_png()}, "forbidden", 1008),
        (None, {"type": "auth", "api_key": "wrong-key"}, "forbidden", 1008),
        (None, {"type": "image", "image": b64_png()}, "unauthorized", 1008),
    ],
)
def test_authentication_by_header_or_first_message(
    fake_client: Callable[..., Any],
    headers: dict[str, str] | None,
    first: dict[str, Any],
    reply: str,
    code: int | None,
) -> None:
    with session(fake_client, headers=headers, server={"api_keys": [KEY_A, KEY_B]}) as ws:
        ws.send_json(first)
        if code is None:
            assert ws.receive_json()["type"] == reply
            open_image(ws)
        else:
            close_code, last = closed_with(ws)
            assert close_code == code and last is not None and last["code"] == reply


def test_object_limit(fake_client: Callable[..., Any]) -> None:
    with session(fake_client, server={"ws_max_objects": 2}) as ws:
        open_image(ws)
        for k in (0, 1):
            assert ask(ws, {"type": "prompt", "object": k, "points": [click(3, 3)]})["type"] == "mask"
        assert ask(ws, {"type": "prompt", "object": 2, "points": [click(3, 3)]})["code"] == "request_too_large"
        assert ask(ws, {"type": "prompt", "object": 1, "points": [click(4, 4)]})["type"] == "mask"  # refining is fine
        ask(ws, {"type": "delete_object", "object": 0})
        assert ask(ws, {"type": "prompt", "object": 2, "points": [click(3, 3)]})["type"] == "mask"


def test_undo_depth_limit(fake_client: Callable[..., Any]) -> None:
    with session(fake_client, server={"ws_max_undo": 2}) as ws:
        open_image(ws)
        for x in (1, 2, 3):
            ask(ws, {"type": "prompt", "object": 0, "points": [click(x, 1)]})
        assert len(ask(ws, {"type": "undo"})["points"]) == 2
        assert len(ask(ws, {"type": "undo"})["points"]) == 1
        assert ask(ws, {"type": "undo"})["code"] == "nothing_to_undo"  # the first step fell out of the history
    with session(fake_client, server={"ws_max_undo": 0}) as ws:
        open_image(ws)
        ask(ws, {"type": "prompt", "object": 0, "points": [click(1, 1)]})
        assert ask(ws, {"type": "undo"})["code"] == "nothing_to_undo"


def test_points_per_object_limit(fake_client: Callable[..., Any]) -> None:
    with session(fake_client, server={"max_points_per_prompt": 2}) as ws:
        open_image(ws)
        ask(ws, {"type": "prompt", "object": 0, "points": [click(1, 1), click(2, 2)]})
        assert ask(ws, {"type": "prompt", "object": 0, "points": [click(3, 3)]})["code"] == "request_too_large"
        assert ask(ws, {"type": "prompt", "object": 1, "points": [click(3, 3)]})["type"] == "mask"


def test_message_over_the_body_limit_closes_with_1009(fake_client: Callable[..., Any]) -> None:
    with session(fake_client, server={"max_body_bytes": 4096}) as ws:
        ws.send_bytes(b"x" * 5000)
        code, last = closed_with(ws)
        assert code == 1009 and last is not None and last["code"] == "payload_too_large"


def test_idle_session_is_closed_with_1001(fake_client: Callable[..., Any]) -> None:
    with session(fake_client, server={"ws_idle_timeout_s": 0.5}) as ws:
        open_image(ws)
        code, last = closed_with(ws)
        assert code == 1001 and last is None


def test_a_slow_call_is_not_idle(fake_client: Callable[..., Any], fake_backend: FakeBackend) -> None:
    with session(fake_client, server={"ws_idle_timeout_s": 0.3}) as ws:
        open_image(ws)
        fake_backend.decode_delay_s = 0.8
        assert ask(ws, {"type": "prompt", "object": 0, "points": [click(1, 1)]})["type"] == "mask"


def test_rate_limit_counts_model_calls(fake_client: Callable[..., Any]) -> None:
    with session(fake_client, server={"rate_limit": "2/minute"}) as ws:
        open_image(ws)
        ask(ws, {"type": "prompt", "object": 0, "points": [click(1, 1)]})
        limited = ask(ws, {"type": "prompt", "object": 0, "points": [click(2, 2)]})
        assert limited["code"] == "rate_limited" and limited["retry_after"] >= 1
        assert ask(ws, {"type": "export"})["objects"] == [0]  # no model call: not counted


def test_calls_go_through_the_runner_deadline(fake_client: Callable[..., Any], fake_backend: FakeBackend) -> None:
    with fake_client(server={"request_timeout_s": 0.3}) as client, client.websocket_connect("/v1/ws") as ws:
        open_image(ws)
        fake_backend.decode_delay_s = 0.6
        assert ask(ws, {"type": "prompt", "object": 0, "points": [click(1, 1)]})["code"] == "timeout"
        fake_backend.decode_delay_s = 0.0
        runner = client.app.state.service.runner
        deadline = time.monotonic() + 30
        while runner.admitted:  # the timed-out call keeps its slot until its decoder call returns
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert ask(ws, {"type": "prompt", "object": 0, "points": [click(1, 1)]})["type"] == "mask"


def test_calls_are_measured_like_rest(fake_client: Callable[..., Any]) -> None:
    def decode_count(text: str) -> float:
        for line in text.splitlines():
            if line.startswith('segmentor_inference_stage_seconds_count{stage="decode_masks"}'):
                return float(line.split()[1])
        return 0.0

    with fake_client(server={"public_metrics": True}) as client:
        before = decode_count(client.get("/metrics").text)
        with client.websocket_connect("/v1/ws") as ws:
            open_image(ws)
            for x in (1, 2, 3):
                ask(ws, {"type": "prompt", "object": 0, "points": [click(x, 1)]})
        assert decode_count(client.get("/metrics").text) == before + 3


def test_openapi_description_names_the_websocket(fake_client: Callable[..., Any]) -> None:
    with fake_client() as client:
        assert "/v1/ws" in client.get("/openapi.json").json()["info"]["description"]


def test_image_message_base64_data_uri(fake_client: Callable[..., Any]) -> None:
    with session(fake_client) as ws:
        uri = "data:image/png;base64," + base64.b64encode(png_bytes(20, 30)).decode()
        assert ask(ws, {"type": "image", "image": uri})["width"] == 30


def test_a_session_that_leaves_gives_its_queued_call_back(
    fake_client: Callable[..., Any], fake_backend: FakeBackend
) -> None:
    """Session B's prompt waits behind A's slow one; B disconnects; its call never runs (cancelled in the queue)."""
    with fake_client() as client, client.websocket_connect("/v1/ws") as a:
        runner = client.app.state.service.runner
        open_image(a)
        fake_backend.decode_delay_s = 1.0
        decodes = fake_backend.decode_calls
        with client.websocket_connect("/v1/ws") as b:
            open_image(b)
            a.send_json({"type": "prompt", "object": 0, "points": [click(1, 1)]})
            b.send_json({"type": "prompt", "object": 0, "points": [click(2, 2)]})
            deadline = time.monotonic() + 30
            while runner.admitted < 2:  # both calls admitted: A running, B waiting for the one slot
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert a.receive_json()["type"] == "mask"
        fake_backend.decode_delay_s = 0.0
        deadline = time.monotonic() + 30
        while runner.admitted:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert fake_backend.decode_calls == decodes + 1  # B's decoder call never started


def test_a_live_session_outlasts_the_header_deadline(fake_backend: FakeBackend) -> None:
    """Served by uvicorn with the service's own h11 protocol: the header deadline (here 0.5 s) must stop at the
    upgrade, not close the WebSocket later."""
    from websockets.sync.client import connect

    from .helpers import free_port, live_server

    config = build_config(server={"port": free_port(), "header_timeout_s": 0.5})
    app = create_app(config, backend=fake_backend)
    with live_server(app, config) as base, connect(base.replace("http://", "ws://") + "/v1/ws") as ws:
        ws.send(png_bytes(HEIGHT, WIDTH))
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        for x in range(4):
            time.sleep(0.4)  # 1.6 s in all: three times the header deadline
            ws.send(json.dumps({"type": "prompt", "object": 0, "points": [click(x, 1)]}))
            assert json.loads(ws.recv(timeout=30))["type"] == "mask"


def test_messages_beyond_the_read_ahead_bound_get_busy(
    fake_client: Callable[..., Any], fake_backend: FakeBackend
) -> None:
    from perceptra_seg.service.ws import MAX_PENDING

    with session(fake_client) as ws:
        open_image(ws)
        fake_backend.decode_delay_s = 0.1
        total = MAX_PENDING + 4
        for x in range(total):
            ws.send_json({"type": "prompt", "object": 0, "points": [click(x % 60, 1)]})
        replies = [ws.receive_json() for _ in range(total)]  # every message is answered, in one way or the other
        kinds = [r["type"] if r["type"] == "mask" else r["code"] for r in replies]
        assert "busy" in kinds and kinds.count("mask") >= MAX_PENDING
        assert set(kinds) <= {"mask", "busy"}


def test_an_unexpected_failure_answers_internal_error_and_the_session_goes_on(
    fake_client: Callable[..., Any], fake_backend: FakeBackend
) -> None:
    with session(fake_client) as ws:
        open_image(ws)
        fake_backend.fail_next = KeyError("boom")  # raised by the next encode: not an error the SDK knows
        ws.send_bytes(png_bytes(20, 20, seed=5))  # a new image: the encoder runs
        error = ws.receive_json()
        assert error == {"type": "error", "code": "internal_error", "message": "internal server error"}
        assert ask(ws, {"type": "prompt", "object": 0, "points": [click(3, 3)]})["type"] == "mask"  # old image kept
