"""Pieces of the video front ends that need no model: the REST video store and the CLI's prompt parsing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from perceptra_seg.cli.track import expected_frames, parse_prompts
from perceptra_seg.exceptions import InvalidInputError, NotFoundError
from perceptra_seg.service.video_store import TooManyVideosError, VideoBusyError, VideoInfo, VideoStore

INFO = VideoInfo(num_frames=8, width=64, height=48, fps=25.0)


class FakeSession:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _add(store: VideoStore, scope: str) -> tuple[str, Path, FakeSession]:
    path = store.new_file()
    path.write_bytes(b"video")
    session = FakeSession()
    return store.add(scope, path, INFO, session).video_id, path, session


def test_ids_are_scoped_and_bounded_per_key() -> None:
    store = VideoStore(max_per_scope=2, ttl_s=60, clock=Clock())
    first, _, _ = _add(store, "a")
    _add(store, "a")
    with pytest.raises(TooManyVideosError) as raised:
        store.check_capacity("a")
    assert raised.value.http_status == 429
    store.check_capacity("b")  # another key has its own quota
    _add(store, "b")
    assert store.get("a", first).video_id == first
    with pytest.raises(NotFoundError):
        store.get("b", first)  # another key's id is unknown
    store.close_all()


def test_delete_closes_the_session_and_removes_the_file() -> None:
    store = VideoStore(max_per_scope=2, ttl_s=60, clock=Clock())
    video_id, path, session = _add(store, "a")
    with pytest.raises(NotFoundError):
        store.remove("b", video_id)
    store.remove("a", video_id)
    assert session.closed and not path.exists() and len(store) == 0
    with pytest.raises(NotFoundError):
        store.get("a", video_id)
    store.close_all()


def test_a_busy_video_refuses_a_second_operation_and_its_deletion() -> None:
    store = VideoStore(max_per_scope=2, ttl_s=60, clock=Clock())
    video_id, _, session = _add(store, "a")
    entry = store.acquire("a", video_id)
    with pytest.raises(VideoBusyError) as raised:
        store.acquire("a", video_id)
    assert raised.value.http_status == 409
    with pytest.raises(VideoBusyError):
        store.remove("a", video_id)
    # the lock may be given back from another thread (the runner's worker releases it)
    worker = threading.Thread(target=store.release, args=(entry,))
    worker.start()
    worker.join()
    store.remove("a", video_id)
    assert session.closed
    store.close_all()


def test_idle_videos_expire_but_busy_ones_wait() -> None:
    clock = Clock()
    store = VideoStore(max_per_scope=3, ttl_s=60, clock=clock)
    idle_id, idle_path, idle_session = _add(store, "a")
    busy_id, _, busy_session = _add(store, "a")
    fresh_id, _, _ = _add(store, "a")
    busy = store.acquire("a", busy_id)
    clock.now += 30
    store.get("a", fresh_id)  # a lookup is no use: only operations restart the idle clock
    store.release(store.acquire("a", fresh_id))
    clock.now += 30
    assert store.sweep() == 1
    assert idle_session.closed and not idle_path.exists()
    with pytest.raises(NotFoundError):
        store.get("a", idle_id)
    store.release(busy)  # its operation just ended: the idle clock restarts
    clock.now += 59  # the fresh one (last used 89 s ago) expires, the busy one (59 s) not yet
    assert store.sweep() == 1 and not busy_session.closed
    clock.now += 1
    assert store.sweep() == 1 and busy_session.closed and len(store) == 0
    store.close_all()


def test_close_all_removes_the_folder() -> None:
    store = VideoStore(max_per_scope=2, ttl_s=60)
    _, path, session = _add(store, "a")
    store.close_all()
    assert session.closed and not path.parent.exists()


def test_prompt_flags_are_grouped_per_frame_and_object() -> None:
    prompts = parse_prompts(
        ["0:1:10,20,30,40", "2:5:1,2,3,4"],
        ["0:1:15.5,25,1", "3:2:5,6,0", "0:1:12,22,0"],
    )
    assert prompts == [
        {"frame": 0, "obj_id": 1, "box": (10.0, 20.0, 30.0, 40.0), "points": [(15.5, 25.0, 1), (12.0, 22.0, 0)]},
        {"frame": 2, "obj_id": 5, "box": (1.0, 2.0, 3.0, 4.0)},
        {"frame": 3, "obj_id": 2, "points": [(5.0, 6.0, 0)]},
    ]


@pytest.mark.parametrize(
    ("boxes", "points", "message"),
    [
        ([], [], "at least one"),
        (["0:1:1,2,3"], [], "4 numbers"),
        (["0:1"], [], "FRAME:OBJ"),
        (["a:1:1,2,3,4"], [], "FRAME:OBJ"),
        (["0:1:1,2,3,4", "0:1:2,3,4,5"], [], "two --box"),
        ([], ["0:1:1,2,2"], "label"),
        ([], ["0:1:1,2"], "3 numbers"),
    ],
)
def test_bad_prompt_flags(boxes: list[str], points: list[str], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_prompts(boxes, points)


@pytest.mark.parametrize(
    ("num_frames", "start", "reverse", "max_frames", "expected"),
    [
        (10, 0, False, None, 10),
        (10, 4, False, None, 6),
        (10, 4, True, None, 5),
        (10, 4, True, 2, 2),
        (10, 8, False, 5, 2),
    ],
)
def test_expected_frames(num_frames: int, start: int, reverse: bool, max_frames: int | None, expected: int) -> None:
    assert expected_frames(num_frames, start, reverse, max_frames) == expected


def test_progress_column_shows_frames_per_second() -> None:
    from rich.console import Console
    from rich.progress import Progress

    from perceptra_seg.cli.track import _FramesPerSecond

    column = _FramesPerSecond()
    with Progress(console=Console(file=None, force_terminal=False), disable=True) as progress:
        task = progress.add_task("tracking", total=4)
        assert column.render(progress.tasks[task]).plain == "-- frames/s"
        now = [0.0]
        progress.get_time = lambda: now[0]  # type: ignore[method-assign]
        for step in range(1, 4):
            now[0] = step * 0.5
            progress.advance(task)
        assert column.render(progress.tasks[task]).plain == "2.00 frames/s"
