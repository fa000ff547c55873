"""``segmentor-cli batch --auto --text`` (issue 19): the local engine on a real (bare reduced, tests/sam3_bare.py) SAM 3
model against ``Segmentor.segment_text``; its refusals on either engine, all before a model loads (or Ray is
contacted); and the categories file (or shards) a re-run must agree with. The Ray engine on the same model:
tests/distributed/test_ray_batch_text.py.

A sam3 checkpoint path that does not exist would fail to load (ModelLoadError, exit 1), and the Ray address below
accepts no connection (a ConfigError naming it): a refusal with its own message shows that it came first.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from perceptra_seg import Segmentor
from perceptra_seg.cli.batch import stable_image_id
from perceptra_seg.cli.common import CommonOptions

from ..sam3_bare import bare_sam3  # noqa: F401 - the fixture
from .conftest import Run

# pycocotools passes copy=False to numpy 2 once per decoded mask
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
ENGINES = {"local": [], "ray": ["--engine", "ray", "--ray-address", "127.0.0.1:9"]}


@pytest.fixture
def sam3_args(tmp_path: Path) -> list[str]:
    return ["--model", "sam3", "--checkpoint", str(tmp_path / "absent" / "sam3.pt"), "--json"]


@pytest.fixture
def folder(images: dict[str, Path]) -> Path:
    return images["coffee"].parent


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--auto"], "no segment-everything generator: give --text"),
        (["--auto", "-t", "car", "--points-per-side", "4"], "--points-per-side apply to segmenting everything"),
        (["--auto", "-t", "car", "-t", "person", "-t", "car"], "repeated: ['car']"),
        (["--auto", "-t", " "], "non-empty phrase"),
        (["--auto", "-t", "car", "--threshold", "1.5"], "threshold must be a number in [0, 1)"),
        (["--prompts", "PROMPTS", "-t", "car"], "--text apply to --auto only"),
        (["--prompts", "PROMPTS", "--threshold", "0.2"], "--threshold apply to --auto only"),
        (["-t", "car"], "--text apply to --auto only"),
    ],
)
def test_refusals_before_sam3_loads(
    cli: Callable[..., Run],
    folder: Path,
    tmp_path: Path,
    sam3_args: list[str],
    engine: str,
    args: list[str],
    message: str,
) -> None:
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"coffee.png": [{"box": [0, 0, 10, 10]}]}))
    args = [str(prompts) if item == "PROMPTS" else item for item in args]
    out = tmp_path / "out.json"
    run = cli("batch", "--images", folder, "--out", out, *args, *ENGINES[engine], *sam3_args)
    assert run.exit_code == 2, run.stdout + run.stderr
    assert run.json()["error"]["code"] == "invalid_input" and message in run.json()["error"]["message"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.json"]  # nothing written


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_text_on_a_model_without_text_prompts(
    cli: Callable[..., Run], folder: Path, tmp_path: Path, engine: str
) -> None:
    out = tmp_path / "o.json"
    run = cli(
        "batch", "--model", "demo", "--images", folder, "--auto", "-t", "car", "-o", out, *ENGINES[engine], "--json"
    )
    assert run.exit_code == 2 and run.json()["error"]["code"] == "text_prompts_unsupported", run.stdout
    assert "--text needs --model sam3" in run.json()["error"]["message"]
    run = cli(
        "batch", "--model", "demo", "--images", folder, "--auto", "--threshold", "0.3", "-o", out, *ENGINES[engine]
    )
    assert run.exit_code == 2 and "--threshold applies to --text only" in run.stderr
    assert not out.exists()


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_a_rerun_must_keep_the_phrases_and_the_mode(
    cli: Callable[..., Run], folder: Path, tmp_path: Path, sam3_args: list[str], engine: str
) -> None:
    flags = ["--images", folder, "--auto", *ENGINES[engine]]
    out = tmp_path / "found.json"
    out.write_text("[]\n")  # written by segmenting everything: no categories file
    run = cli("batch", *flags, "-o", out, "-t", "car", *sam3_args)
    assert run.exit_code == 2 and "written without --text" in run.json()["error"]["message"]

    sidecar = tmp_path / "found.categories.json"
    sidecar.write_text(json.dumps({"categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}]}))
    run = cli("batch", *flags, "-o", out, "-t", "car", "-t", "person", *sam3_args)
    assert run.exit_code == 2 and "phrases ['person', 'car'], not ['car', 'person']" in run.json()["error"]["message"]

    run = cli("batch", *flags, "-o", out, "--model", "demo", "--json")  # automatic masks into --text results
    assert run.exit_code == 2 and "holds --text results" in run.json()["error"]["message"]
    assert out.read_text() == "[]\n"


def test_ray_shards_written_without_text_are_refused(
    cli: Callable[..., Run], folder: Path, tmp_path: Path, sam3_args: list[str]
) -> None:
    """An interrupted Ray run leaves shards and no merged file: a run with phrases must not resume from them."""
    shards = tmp_path / "found.shards"
    shards.mkdir()
    line = {"image_id": stable_image_id("coffee.png"), "name": "coffee.png", "results": []}
    (shards / "part-0.jsonl").write_text(json.dumps(line) + "\n")
    out = tmp_path / "found.json"
    run = cli("batch", "--images", folder, "--auto", *ENGINES["ray"], "-o", out, "-t", "car", *sam3_args)
    assert run.exit_code == 2 and "shards written without --text" in run.json()["error"]["message"]
    assert not out.exists() and not (tmp_path / "found.categories.json").exists()


def test_local_checks_pass_with_the_same_phrases(
    cli: Callable[..., Run], folder: Path, tmp_path: Path, sam3_args: list[str]
) -> None:
    """The same phrases pass every check and reach the model, which then fails to load (exit 1); a yolo-seg folder of
    other phrases is refused before its data.yaml is touched."""
    out = tmp_path / "found.json"
    out.write_text("[]\n")
    (tmp_path / "found.categories.json").write_text(json.dumps({"categories": [{"id": 1, "name": "car"}]}))
    run = cli("batch", "--images", folder, "--auto", "-o", out, "-t", "car", *sam3_args)
    assert run.exit_code == 1 and run.json()["error"]["code"] != "invalid_input"

    yolo = tmp_path / "labels_dir"
    yolo.mkdir()
    (yolo / "categories.json").write_text(json.dumps({"categories": [{"id": 1, "name": "bus"}]}))
    run = cli("batch", "--images", folder, "--auto", "-o", yolo, "--format", "yolo-seg", "-t", "car", *sam3_args)
    assert run.exit_code == 2 and "phrases ['bus'], not ['car']" in run.json()["error"]["message"]
    assert sorted(p.name for p in yolo.iterdir()) == ["categories.json"]


PHRASES = ("coffee cup", "red car")
#: Keeps a good part of the bare model's 200 instances of each phrase on these photos (scores about 0.10-0.18).
THRESHOLD = 0.14


def test_local_engine_writes_segment_texts_instances_once_per_encoding(
    cli: Callable[..., Run],
    bare_sam3: dict[str, Any],  # noqa: F811
    photos: dict[str, np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two images, two phrases: one encoding per image; the COCO records (decoded with pycocotools) are
    ``segment_text``'s instances of each phrase in order (``category_id`` = the phrase's position, ``score`` kept,
    image ids from the names); the categories file names the phrases; a re-run skips both images."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    pictures = {"coffee.png": photos["coffee"][::4, ::4], "sub/chelsea.png": photos["chelsea"][::4, ::4]}
    for name, pixels in pictures.items():
        Image.fromarray(np.ascontiguousarray(pixels)).save(folder / name)
    config = tmp_path / "sam3.yaml"
    config.write_text(yaml.safe_dump(bare_sam3), encoding="utf-8")
    seg = Segmentor(bare_sam3)
    monkeypatch.setattr(CommonOptions, "segmentor", lambda self: contextlib.nullcontext(seg))
    out = tmp_path / "found.json"
    phrase_args = [a for p in PHRASES for a in ("-t", p)]
    argv = ["batch", "-c", config, "--images", folder, "--auto", *phrase_args, "--threshold", str(THRESHOLD)]
    run = cli(*argv, "-o", out, "--json")
    assert run.exit_code == 0, run.stdout + run.stderr
    assert seg.encoder_calls == 2  # one per image, for both phrases
    summary = run.json()
    assert (summary["images"], summary["processed"], summary["failed"]) == (2, 2, [])
    assert summary["categories"] == str(tmp_path / "found.categories.json")
    categories = json.loads((tmp_path / "found.categories.json").read_text())["categories"]
    assert categories == [{"id": 1, "name": "coffee cup"}, {"id": 2, "name": "red car"}]
    records = json.loads(out.read_text())
    assert summary["results_written"] == len(records)
    for name, pixels in pictures.items():  # images in name order, each phrase's instances in turn
        mine = [r for r in records if r["image_id"] == stable_image_id(name)]
        assert [r["category_id"] for r in mine] == sorted(r["category_id"] for r in mine)
        for category, phrase in enumerate(PHRASES, start=1):
            want = seg.segment_text(pixels, phrase, threshold=THRESHOLD, output_formats=["numpy"])
            got = [r for r in mine if r["category_id"] == category]
            assert len(got) == len(want) >= 3
            for record, result in zip(got, want, strict=True):
                rle = {"size": record["segmentation"]["size"], "counts": record["segmentation"]["counts"].encode()}
                np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), result.mask)
                assert record["score"] == pytest.approx(result.score, abs=1e-6) and result.score > THRESHOLD
                assert "annotation_id" not in record
    assert [r["image_id"] for r in records] == sorted(
        (r["image_id"] for r in records), key=[stable_image_id(n) for n in sorted(pictures)].index
    )
    assert seg.encoder_calls == 2

    written = out.read_bytes()
    again = cli(*argv, "-o", out, "--json")  # everything is there: nothing runs, nothing changes
    assert again.exit_code == 0 and (again.json()["processed"], again.json()["skipped_existing"]) == (0, 2)
    assert out.read_bytes() == written and seg.encoder_calls == 2


def test_a_ray_run_that_never_starts_leaves_no_categories_file(
    cli: Callable[..., Run], folder: Path, tmp_path: Path, sam3_args: list[str]
) -> None:
    """The categories file is written before the cluster is contacted; when nothing was segmented it goes again, so
    a later run may choose other phrases."""
    out = tmp_path / "found.json"
    run = cli("batch", "--images", folder, "--auto", *ENGINES["ray"], "-o", out, "-t", "car", *sam3_args)
    assert run.exit_code == 2 and "127.0.0.1:9" in run.json()["error"]["message"]
    assert not (tmp_path / "found.categories.json").exists() and not out.exists()
    run = cli("batch", "--images", folder, "--auto", *ENGINES["ray"], "-o", out, "-t", "person", *sam3_args)
    assert "127.0.0.1:9" in run.json()["error"]["message"]  # the same failure, not a refusal of other phrases
