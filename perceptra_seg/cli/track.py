"""``track``: follow prompted objects through a video (SAM 2 / 2.1) and write the results as they stream in.

Prompts are given per frame and object, in pixels of the original frame:

* ``--box FRAME:OBJ:X1,Y1,X2,Y2`` (XYXY) — at most one box per object and frame;
* ``--point FRAME:OBJ:X,Y,LABEL`` (label 1 = foreground, 0 = background), repeatable;
* ``--text FRAME:PHRASE`` (model ``sam3`` only, alone): every instance of the phrase, with ids SAM 3 assigns.

A box and points with the same ``FRAME:OBJ`` form one prompt (as Meta's ``add_new_points_or_box``). Outputs:
``--out`` a YouTube-VIS results file (:mod:`perceptra_seg.video.outputs`), ``--masks-dir`` a DAVIS-style folder of
palette PNGs (:mod:`perceptra_seg.video.palette`; object ids 1..255), ``--overlay`` an mp4 with the masks drawn
(:mod:`perceptra_seg.video.overlay`). Every output is written while the frames stream in and only renamed into
place (``--out``, ``--overlay``) when the run succeeds. Errors follow the CLI's policy (exit 2 for bad input,
checked before the model loads where possible).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

from perceptra_seg.exceptions import InvalidInputError

from .common import CommonOptions, command, emit_json, require_output_dirs

__all__ = ["parse_prompts", "register"]


def register(app: typer.Typer) -> None:
    """Add ``track`` to ``app``."""
    command(app, "track")(track)


def _split(value: str, flag: str, form: str, numbers: int) -> tuple[int, int, list[float]]:
    """``FRAME:OBJ:A,B,...`` -> ``(frame, obj, [A, B, ...])`` with exactly ``numbers`` numbers."""
    parts = value.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        frame, obj = int(parts[0]), int(parts[1])
        values = [float(v) for v in parts[2].split(",")]
    except ValueError:
        raise InvalidInputError(f"{flag} expects {form}, got {value!r}") from None
    if len(values) != numbers:
        raise InvalidInputError(f"{flag} expects {form} ({numbers} numbers after the second ':'), got {value!r}")
    return frame, obj, values


def parse_prompts(boxes: list[str], points: list[str], texts: Sequence[str] = ()) -> list[dict[str, Any]]:
    """``--box`` / ``--point`` values -> prompt dicts ``{"frame", "obj_id", "box"?, "points"?}``, one per
    ``(frame, obj)`` in the order each pair first appears (boxes first); then one ``{"frame", "text"}`` per
    ``--text FRAME:PHRASE`` (SAM 3; the SDK refuses text mixed with boxes or clicks).

    Raises:
        InvalidInputError: a malformed value, a label other than 0/1, two boxes for one object on one frame, or no
            prompt at all.
    """
    prompts: dict[tuple[int, int], dict[str, Any]] = {}
    for value in boxes:
        frame, obj, (x1, y1, x2, y2) = _split(value, "--box", "FRAME:OBJ:X1,Y1,X2,Y2", 4)
        prompt = prompts.setdefault((frame, obj), {"frame": frame, "obj_id": obj})
        if "box" in prompt:
            raise InvalidInputError(f"two --box values for object {obj} on frame {frame}")
        prompt["box"] = (x1, y1, x2, y2)
    for value in points:
        frame, obj, (x, y, label) = _split(value, "--point", "FRAME:OBJ:X,Y,LABEL", 3)
        if label not in (0.0, 1.0):
            raise InvalidInputError(f"--point label must be 1 (foreground) or 0 (background), got {value!r}")
        prompt = prompts.setdefault((frame, obj), {"frame": frame, "obj_id": obj})
        prompt.setdefault("points", []).append((x, y, int(label)))
    concepts = []
    for value in texts:
        frame_text, _, phrase = value.partition(":")
        try:
            frame = int(frame_text)
        except ValueError:
            raise InvalidInputError(f"--text expects FRAME:PHRASE, got {value!r}") from None
        concepts.append({"frame": frame, "text": phrase})
    if not prompts and not concepts:
        raise InvalidInputError("give at least one --box, --point or --text")
    return [*prompts.values(), *concepts]


class _FramesPerSecond(ProgressColumn):
    """``12.3 frames/s`` (rich's own speed estimate of the task)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- frames/s" if speed is None else f"{speed:.2f} frames/s", style="progress.data.speed")


def _bar(console: Console, *, disable: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _FramesPerSecond(),
        console=console,
        disable=disable or not console.is_terminal,
    )


def expected_frames(num_frames: int, start: int, reverse: bool, max_frames: int | None) -> int:
    """Frames a run from ``start`` will yield (to size the progress bar)."""
    remaining = start + 1 if reverse else num_frames - start
    return remaining if max_frames is None else max(0, min(remaining, max_frames))


def track(
    opts: CommonOptions,
    video: Annotated[Path, typer.Argument(help="Video file (mp4, webm, mov, ...) or a folder of JPEG/PNG frames.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Results JSON (YouTube-VIS results layout).")],
    box: Annotated[
        list[str] | None,
        typer.Option("--box", "-b", metavar="FRAME:OBJ:X1,Y1,X2,Y2", help="A box prompt; repeatable."),
    ] = None,
    point: Annotated[
        list[str] | None,
        typer.Option("--point", "-p", metavar="FRAME:OBJ:X,Y,LABEL", help="A click (1 fg, 0 bg); repeatable."),
    ] = None,
    text: Annotated[
        list[str] | None,
        typer.Option(
            "--text", "-t", metavar="FRAME:PHRASE", help="SAM 3: track every instance of a phrase from that frame on."
        ),
    ] = None,
    masks_dir: Annotated[
        Path | None, typer.Option("--masks-dir", help="Folder for one palette PNG per frame (pixel = object id).")
    ] = None,
    overlay: Annotated[Path | None, typer.Option("--overlay", help="An .mp4 of the frames with masks drawn.")] = None,
    reverse: Annotated[bool, typer.Option("--reverse", help="Track backwards from the start frame.")] = False,
    start_frame: Annotated[
        int | None,
        typer.Option(
            "--start-frame", help="First frame to track; default: the first prompted frame (the last with --reverse)."
        ),
    ] = None,
    max_frames: Annotated[int | None, typer.Option("--max-frames", help="Track at most this many frames.")] = None,
    video_id: Annotated[int, typer.Option("--video-id", help="The results file's video_id.")] = 1,
) -> None:
    """Track prompted objects through a video; write YouTube-VIS results, palette PNGs and an overlay mp4."""
    from perceptra_seg.video.api import default_start_frame
    from perceptra_seg.video.frames import open_frames
    from perceptra_seg.video.outputs import YouTubeVisWriter
    from perceptra_seg.video.overlay import OverlayVideoWriter
    from perceptra_seg.video.palette import PaletteMaskWriter, check_object_ids

    prompts = parse_prompts(box or [], point or [], text or [])
    _check_paths(video, out, overlay, masks_dir)
    if masks_dir is not None:
        if text:
            raise InvalidInputError("--masks-dir needs caller-chosen object ids (1..255); --text ids come from SAM 3")
        check_object_ids(p["obj_id"] for p in prompts)
    for name, value in (("--start-frame", start_frame), ("--max-frames", max_frames)):
        if value is not None and value < 0:
            raise InvalidInputError(f"{name} must not be negative, got {value}")
    formats = ("rle", "numpy") if masks_dir is not None or overlay is not None else ("rle",)
    with contextlib.ExitStack() as stack:
        frames = open_frames(str(video))
        stack.callback(frames.close)
        num_frames, size = frames.num_frames, (frames.height, frames.width)
        prompted = [p["frame"] for p in prompts]
        start = start_frame if start_frame is not None else default_start_frame(prompted, reverse=reverse)
        seg = stack.enter_context(opts.segmentor())
        stream = seg.track(
            str(video),
            prompts,
            reverse=reverse,
            start_frame=start_frame,
            max_frames=max_frames,
            output_formats=formats,
        )
        vis = stack.enter_context(YouTubeVisWriter(out, num_frames=num_frames, video_id=video_id))
        palette = PaletteMaskWriter(masks_dir, size=size) if masks_dir is not None else None
        drawing = stack.enter_context(OverlayVideoWriter(overlay, size=size, fps=frames.fps)) if overlay else None
        progress = stack.enter_context(_bar(Console(stderr=True), disable=opts.json))
        task = progress.add_task("tracking", total=expected_frames(num_frames, start, reverse, max_frames))
        started = time.perf_counter()
        objects: set[int] = set()
        tracked = 0
        for frame_index, results in _closing(stream):
            vis.add(frame_index, results)
            if palette is not None:
                palette.add(frame_index, results)
            if drawing is not None:
                drawing.add(frames.frame(frame_index), results)
            objects.update(results)
            tracked += 1
            progress.advance(task)
        seconds = time.perf_counter() - started
    summary = {
        "video": str(video),
        "num_frames": num_frames,
        "frames_tracked": tracked,
        "objects": sorted(objects),
        "frames_per_second": round(tracked / seconds, 3) if seconds > 0 else None,
        "out": str(out),
        "masks_dir": None if masks_dir is None else str(masks_dir),
        "overlay": None if overlay is None else str(overlay),
    }
    if opts.json:
        emit_json(summary)
    else:
        typer.echo(f"{tracked} frame(s) tracked, {len(objects)} object(s); results written to {out}")
        if masks_dir is not None:
            typer.echo(f"masks: {masks_dir}")
        if overlay is not None:
            typer.echo(f"overlay: {overlay}")


def _closing(stream: Any) -> Iterator[Any]:
    """Iterate ``stream`` and close it (and the tracking session behind it) however the loop ends."""
    try:
        yield from stream
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def _check_paths(video: Path, out: Path, overlay: Path | None, masks_dir: Path | None) -> None:
    """Fail before the model loads: a missing video, misnamed outputs, output folders that do not exist."""
    if not video.exists():
        raise InvalidInputError(f"video not found: {str(video)!r}")
    for path, suffix, what in ((out, ".json", "--out"), (overlay, ".mp4", "--overlay")):
        if path is not None and path.suffix.lower() != suffix:
            raise InvalidInputError(f"{what} {path} must be named *{suffix}")
    require_output_dirs(out, overlay)
    if masks_dir is not None and masks_dir.exists() and not masks_dir.is_dir():
        raise InvalidInputError(f"--masks-dir {masks_dir} is not a directory")
    if masks_dir is not None:
        require_output_dirs(masks_dir)
