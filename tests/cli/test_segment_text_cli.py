"""``segmentor-cli segment-text``: its refusals (bad phrases, exemplars, output names, a model without text
prompts). A successful run on a real SAM 3 model is in tests/parity/test_sam3.py (it shares that model)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import Run


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-t", " "], "non-empty phrase"),
        ([], "text prompt, exemplar boxes"),
        (["-t", "car", "--exemplar", "1 2 3"], "four numbers"),
        (["-t", "car", "--negative", "a b c d"], "four numbers"),
        (["-t", "car", "-o", "out.png"], "--out"),
    ],
)
def test_refusals_before_the_model_loads(
    cli: Callable[..., Run], images: dict[str, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    run = cli("segment-text", "-i", images["coffee"], *[str(tmp_path / a) if a == "out.png" else a for a in args])
    assert run.exit_code == 2
    assert message in run.stderr


def test_a_model_without_text_prompts(cli: Callable[..., Run], config_file: Path, images: dict[str, Path]) -> None:
    run = cli("segment-text", "-c", config_file, "-i", images["coffee"], "-t", "red car", "--json")
    assert run.exit_code == 2
    assert run.json()["error"]["code"] == "text_prompts_unsupported"


def test_missing_image(cli: Callable[..., Run], tmp_path: Path) -> None:
    run = cli("segment-text", "-i", tmp_path / "nope.png", "-t", "car")
    assert run.exit_code == 2 and "image file not found" in run.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "image"),  # a text file named .png
        (["--exemplar", "10 10 5000 40"], "inside the"),  # a box beyond the image's edge
    ],
)
def test_the_image_is_decoded_and_checked_before_sam3_loads(
    cli: Callable[..., Run], images: dict[str, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    """A checkpoint path that does not exist would fail to load (ModelLoadError, exit 1): exit 2 with the input's
    error shows nothing was loaded."""
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image at all")
    image = images["coffee"] if args else not_an_image
    missing = tmp_path / "absent" / "sam3.pt"
    run = cli("segment-text", "--model", "sam3", "--checkpoint", missing, "-i", image, "-t", "cup", *args, "--json")
    assert run.exit_code == 2, run.stdout + run.stderr
    error = run.json()["error"]
    assert error["code"] == "invalid_input" and message in error["message"]
    assert "checkpoint" not in error["message"]
