"""/v1/videos end to end on a tiny random-weight SAM 2 checkpoint: upload, prompt, NDJSON propagation equal to the
SDK's ``track``, limits, scoping, expiry, deletion, disconnects, deadlines and health during a propagation.

The tracker is loaded from the config's checkpoint (a reduced-input hiera_tiny); the image routes' backend is the
fast fake one (the video routes never use it, and the image path does not load that reduced architecture).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")

from perceptra_seg.service import create_app
from perceptra_seg.utils.masks import rle_to_mask
from perceptra_seg.video.session import VideoSession

from ..service.helpers import KEY_A, KEY_B, FakeBackend, auth, build_config, free_port, live_server, running

BOX = [10.0, 8.0, 50.0, 40.0]


class Sam2Fake(FakeBackend):
    """The fake image backend, reporting the SAM 2 family the configured tracker has."""

    family = "sam2"


CLICK = {"x": 70.0, "y": 30.0, "label": 1}
PROMPTS = [  # conftest.SDK_PROMPTS in the REST form
    {"frame": 0, "obj_id": 1, "box": BOX},
    {"frame": 2, "obj_id": 3, "points": [CLICK]},
]


@pytest.fixture
def client_for(video_sections: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    """``client_for(server={...})``: a ready TestClient over the tiny SAM 2 model (API keys A and B)."""
    stack: list[Any] = []

    def make(**server: Any) -> Any:
        config = build_config(video_sections, server={"api_keys": [KEY_A, KEY_B], **server})
        context = running(create_app(config, backend=Sam2Fake()), headers=auth(KEY_A))
        stack.append(context)
        return context.__enter__()

    yield make
    for context in reversed(stack):
        context.__exit__(None, None, None)


def _upload(client: Any, path: Path, headers: dict[str, str] | None = None) -> httpx.Response:
    with path.open("rb") as handle:
        return client.post("/v1/videos", files={"file": ("clip.mp4", handle, "video/mp4")}, headers=headers)


def _lines(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line]


def _masks(document: dict[str, Any]) -> dict[int, np.ndarray]:
    return {o["obj_id"]: rle_to_mask(o["rle"]) for o in document["objects"]}


def test_upload_prompt_propagate_equals_the_sdk(
    client_for: Callable[..., Any], clip_path: Path, clip_frames: list[np.ndarray], forward_masks: dict[int, Any]
) -> None:
    expected = forward_masks
    client = client_for()
    uploaded = _upload(client, clip_path)
    assert uploaded.status_code == 200, uploaded.text
    info = uploaded.json()
    height, width = clip_frames[0].shape[:2]
    assert (info["num_frames"], info["width"], info["height"]) == (len(clip_frames), width, height)
    assert info["fps"] == pytest.approx(10.0)
    video = info["video_id"]
    for prompt in PROMPTS:
        answer = client.post(f"/v1/videos/{video}/prompts", json=prompt)
        assert answer.status_code == 200, answer.text
        assert answer.json()["frame"] == prompt["frame"]
        assert prompt["obj_id"] in [o["obj_id"] for o in answer.json()["objects"]]
    streamed = client.post(f"/v1/videos/{video}/propagate", json={})
    assert streamed.status_code == 200, streamed.text
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    lines = _lines(streamed)
    assert [line["frame"] for line in lines] == sorted(expected) == list(range(len(clip_frames)))
    for line in lines:
        got = _masks(line)
        assert sorted(got) == sorted(expected[line["frame"]])
        for obj, mask in got.items():
            np.testing.assert_array_equal(mask, expected[line["frame"]][obj])
    backwards = _lines(client.post(f"/v1/videos/{video}/propagate", json={"reverse": True, "start_frame": 5}))
    assert [line["frame"] for line in backwards] == [5, 4, 3, 2, 1, 0]
    capped = _lines(client.post(f"/v1/videos/{video}/propagate", json={"start_frame": 1, "max_frames": 3}))
    assert [line["frame"] for line in capped] == [1, 2, 3]
    assert client.delete(f"/v1/videos/{video}").status_code == 204
    assert client.post(f"/v1/videos/{video}/propagate", json={}).status_code == 404


def test_another_key_sees_nothing_and_bad_requests_are_4xx(client_for: Callable[..., Any], clip_path: Path) -> None:
    client = client_for()
    video = _upload(client, clip_path).json()["video_id"]
    other = auth(KEY_B)
    assert client.post(f"/v1/videos/{video}/prompts", json=PROMPTS[0], headers=other).status_code == 404
    assert client.post(f"/v1/videos/{video}/propagate", json={}, headers=other).status_code == 404
    assert client.delete(f"/v1/videos/{video}", headers=other).status_code == 404
    assert client.post("/v1/videos/" + "0" * 32 + "/propagate", json={}).status_code == 404
    # nothing prompted yet; a box outside the frame; a frame out of range; no box nor points; unknown field
    assert client.post(f"/v1/videos/{video}/propagate", json={}).status_code == 400
    text = client.post(f"/v1/videos/{video}/propagate", json={"text": "car"})  # phrases are SAM 3's
    assert text.status_code == 400 and text.json()["error"]["code"] == "text_prompts_unsupported"
    outside = client.post(f"/v1/videos/{video}/prompts", json={"frame": 0, "obj_id": 1, "box": [0, 0, 500, 40]})
    assert outside.status_code == 400 and outside.json()["error"]["code"] == "invalid_input"
    assert client.post(f"/v1/videos/{video}/prompts", json={**PROMPTS[0], "frame": 99}).status_code == 400
    assert client.post(f"/v1/videos/{video}/prompts", json={"frame": 0, "obj_id": 1}).status_code == 400
    assert client.post(f"/v1/videos/{video}/prompts", json={**PROMPTS[0], "colour": 1}).status_code == 422
    assert client.post("/v1/videos", files={"other": ("x", b"1")}).status_code == 422
    garbage = client.post("/v1/videos", files={"file": ("clip.mp4", b"not a video at all", "video/mp4")})
    assert garbage.status_code == 400, garbage.text
    assert client.delete(f"/v1/videos/{video}", headers=auth(KEY_A)).status_code == 204


def test_limits(client_for: Callable[..., Any], clip_path: Path, clip_frames: list[np.ndarray]) -> None:
    size = clip_path.stat().st_size
    height, width = clip_frames[0].shape[:2]
    client = client_for(max_video_bytes=size - 1, max_video_sessions=1, max_video_objects=1, max_points_per_prompt=2)
    too_big = _upload(client, clip_path)
    assert too_big.status_code == 413, too_big.text
    client = client_for(max_video_frames=len(clip_frames) - 1)
    assert _upload(client, clip_path).json()["error"]["code"] == "video_too_large"
    client = client_for(max_video_pixels=height * width - 1)
    assert _upload(client, clip_path).status_code == 413
    client = client_for(max_video_sessions=1, max_video_objects=1, max_points_per_prompt=2)
    video = _upload(client, clip_path).json()["video_id"]
    second = _upload(client, clip_path)
    assert second.status_code == 429 and second.json()["error"]["code"] == "too_many_videos"
    assert _upload(client, clip_path, headers=auth(KEY_B)).status_code == 200  # the quota is per key
    assert client.post(f"/v1/videos/{video}/prompts", json=PROMPTS[0]).status_code == 200
    one_more = client.post(f"/v1/videos/{video}/prompts", json=PROMPTS[1])
    assert one_more.status_code == 413 and one_more.json()["error"]["code"] == "request_too_large"
    many_points = {"frame": 0, "obj_id": 1, "points": [CLICK, CLICK, CLICK]}
    assert client.post(f"/v1/videos/{video}/prompts", json=many_points).status_code == 413
    assert client.delete(f"/v1/videos/{video}").status_code == 204
    assert _upload(client, clip_path).status_code == 200  # deleting freed the slot


def test_videos_expire_after_the_ttl(client_for: Callable[..., Any], clip_path: Path) -> None:
    client = client_for(video_ttl_s=60)
    store = client.app.state.service.videos
    now = [5000.0]
    store.clock = lambda: now[0]
    video = _upload(client, clip_path).json()["video_id"]
    now[0] += 59
    assert client.post(f"/v1/videos/{video}/prompts", json=PROMPTS[0]).status_code == 200
    now[0] += 59  # the prompt restarted the idle clock
    assert client.post(f"/v1/videos/{video}/propagate", json={"max_frames": 1}).status_code == 200
    now[0] += 60
    assert client.post(f"/v1/videos/{video}/propagate", json={}).status_code == 404
    assert len(store) == 0


class _Gate:
    """Wraps ``VideoSession.propagate``: after the first frame, wait (at most 30 s) until the call's cancel token
    is set, so a test can act while a propagation is provably in progress."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.produced: list[int] = []
        self.reached = threading.Event()
        self.finished = threading.Event()
        original = VideoSession.propagate
        gate = self

        def gated(session: VideoSession, **kwargs: Any) -> Iterator[Any]:
            inner = original(session, **kwargs)
            cancel = kwargs["cancel"]

            def frames() -> Iterator[Any]:
                try:
                    for item in inner:
                        gate.produced.append(item[0])
                        yield item
                        if len(gate.produced) == 1:
                            gate.reached.set()
                            deadline = time.monotonic() + 30
                            while not cancel.cancelled and time.monotonic() < deadline:
                                time.sleep(0.01)
                finally:
                    gate.finished.set()

            return frames()

        monkeypatch.setattr(VideoSession, "propagate", gated)


def test_disconnect_stops_the_work_and_health_answers_meanwhile(
    video_sections: dict[str, Any], clip_path: Path, clip_frames: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = _Gate(monkeypatch)
    config = build_config(video_sections, server={"port": free_port()})
    with (
        live_server(create_app(config, backend=Sam2Fake()), config) as base,
        httpx.Client(base_url=base, timeout=60) as http,
    ):
        with clip_path.open("rb") as handle:
            video = http.post("/v1/videos", files={"file": ("clip.mp4", handle)}).json()["video_id"]
        assert http.post(f"/v1/videos/{video}/prompts", json=PROMPTS[0]).status_code == 200
        streaming = httpx.Client(base_url=base, timeout=60)
        with streaming, streaming.stream("POST", f"/v1/videos/{video}/propagate", json={}) as response:
            lines = response.iter_lines()  # kept referenced: a dropped iterator closes the connection
            first = json.loads(next(lines))
            assert first["frame"] == 0
            assert gate.reached.wait(30)
            assert http.get("/v1/healthz").status_code == 200  # the event loop is free
            busy = http.post(f"/v1/videos/{video}/prompts", json=PROMPTS[0])
            assert busy.status_code == 409 and busy.json()["error"]["code"] == "video_busy"
            assert not gate.finished.is_set()
            del lines
        # leaving the block closed the connection: the token is set, the tracking stops at the next frame
        assert gate.finished.wait(30)
        assert len(gate.produced) < len(clip_frames)
        deadline = time.monotonic() + 30
        while (deleted := http.delete(f"/v1/videos/{video}")).status_code == 409:  # the worker gives it back
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert deleted.status_code == 204


def test_the_deadline_ends_the_stream_with_a_timeout_line(
    client_for: Callable[..., Any], clip_path: Path, clip_frames: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = _Gate(monkeypatch)
    client = client_for(video_timeout_s=0.5)
    video = _upload(client, clip_path).json()["video_id"]
    assert client.post(f"/v1/videos/{video}/prompts", json=PROMPTS[0]).status_code == 200
    response = client.post(f"/v1/videos/{video}/propagate", json={})
    if response.status_code == 504:  # the deadline passed before frame 0 was sent: an ordinary error answer
        assert response.json()["error"]["code"] == "timeout"
    else:  # after it: the stream ends with an error line
        lines = _lines(response)
        assert [line.get("frame") for line in lines[:-1]] == [0]
        assert lines[-1]["error"]["code"] == "timeout"
    assert gate.finished.wait(30) and len(gate.produced) < len(clip_frames)


def test_upload_by_url_when_urls_are_allowed(video_sections: dict[str, Any], clip_path: Path) -> None:
    data = clip_path.read_bytes()
    fetches = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, content=data)))
    allowed = build_config(video_sections, input={"allow_urls": True})
    with fetches, running(create_app(allowed, backend=Sam2Fake(), http_client=fetches)) as client:
        answer = client.post("/v1/videos", json={"url": "https://videos.example/clip.mp4"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["num_frames"] == 8
        client.app.state.service.config.server.max_video_bytes = len(data) - 1
        too_big = client.post("/v1/videos", json={"url": "https://videos.example/clip.mp4"})
        assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "video_too_large"
    with running(create_app(build_config(video_sections), backend=Sam2Fake())) as client:
        refused = client.post("/v1/videos", json={"url": "https://videos.example/clip.mp4"})
        assert refused.status_code == 400 and "input.allow_urls" in refused.json()["error"]["message"]


def test_an_image_only_model_refuses_videos(clip_path: Path) -> None:
    with running(create_app(build_config(), backend=FakeBackend())) as client:  # a SAM 1 backend
        answer = _upload(client, clip_path)
    assert answer.status_code == 400 and "SAM 2" in answer.json()["error"]["message"]


def test_the_upload_route_has_its_own_body_limit(client_for: Callable[..., Any], clip_path: Path) -> None:
    client = client_for(max_body_bytes=1024, max_video_bytes=2 * clip_path.stat().st_size)
    assert clip_path.stat().st_size > 1024
    assert _upload(client, clip_path).status_code == 200  # over max_body_bytes, within max_video_bytes
    assert client.post("/v1/segment/box", content=b"x" * 2048).status_code == 413  # other routes keep theirs
    huge = client.post("/v1/videos", files={"file": ("big.mp4", b"\0" * (2 * clip_path.stat().st_size + 70_000))})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "payload_too_large"
