"""``batch --engine ray --auto --text`` (SAM 3 phrases) on the two-node test cluster: byte for byte the file the local
engine writes, the same categories file, resumed from its shards; a re-run with other phrases is refused.

The model is the bare reduced SAM 3 of tests/sam3_bare.py. The Ray actor reserves one CPU and Ray gives it one
intra-op thread; the local run gets one thread too (SAM 3's backend does not apply ``runtime.num_threads``, so it is
set here), so both sum floats in the same order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from perceptra_seg.cli.batch import stable_image_id

from ..sam3_bare import bare_sam3  # noqa: F401 - the fixture
from .conftest import RayCluster, Run

# pycocotools passes copy=False to numpy 2 once per decoded mask
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
PHRASES = ("coffee cup", "red car")
THRESHOLD = "0.14"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """This process's torch runs one intra-op thread while the test runs (as the Ray actor does; the local engine's
    config says so too), and gets its thread count back afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_ray_text_writes_the_local_engines_file_and_categories(
    cli: Callable[..., Run],
    ray_cluster: RayCluster,
    bare_sam3: dict[str, Any],  # noqa: F811
    photos: dict[str, np.ndarray],
    tmp_path: Path,
    one_thread: None,
) -> None:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    names = ["coffee.png", "sub/chelsea.png"]
    for name, pixels in zip(names, (photos["coffee"], photos["chelsea"]), strict=True):
        Image.fromarray(np.ascontiguousarray(pixels[::4, ::4])).save(folder / name)
    config = tmp_path / "sam3.yaml"
    config.write_text(yaml.safe_dump({**bare_sam3, "runtime": {**bare_sam3["runtime"], "num_threads": 1}}))
    text = [a for p in PHRASES for a in ("--text", p)]
    flags = ["--config", config, "--auto", *text, "--threshold", THRESHOLD, "--json"]
    local = tmp_path / "local.json"
    run = cli("batch", "--images", folder, "--out", local, *flags)
    assert run.exit_code == 0 and run.json()["processed"] == 2, run.stdout + run.stderr

    out = tmp_path / "ray.json"
    argv = ["batch", "--engine", "ray", "--ray-address", ray_cluster.address, "--images", folder.as_uri()]
    run = cli(*argv, "--out", out, *flags)
    assert run.exit_code == 0, run.stdout + run.stderr
    summary = run.json()
    assert (summary["engine"], summary["processed"], summary["failed"]) == ("ray", 2, [])
    assert out.read_bytes() == local.read_bytes()  # same masks, scores, categories and RLE strings, same order
    records = json.loads(out.read_text())
    assert summary["results_written"] == len(records)
    assert {r["image_id"] for r in records} == {stable_image_id(name) for name in names}
    assert {r["category_id"] for r in records} == {1, 2}
    for record in records:
        assert mask_utils.decode(record["segmentation"]).shape[:2] == tuple(record["segmentation"]["size"])
        assert record["score"] > float(THRESHOLD)
    categories = tmp_path / "ray.categories.json"
    assert summary["categories"] == str(categories)
    assert categories.read_text() == (tmp_path / "local.categories.json").read_text()
    assert json.loads(categories.read_text())["categories"] == [{"id": i, "name": p} for i, p in enumerate(PHRASES, 1)]

    run = cli(*argv, "--out", out, *flags)  # resumed from the shards: nothing runs again
    assert run.exit_code == 0 and (run.json()["processed"], run.json()["skipped_existing"]) == (0, 2)
    assert out.read_bytes() == local.read_bytes()

    swapped = ["--config", config, "--auto", "--text", PHRASES[1], "--text", PHRASES[0], "--json"]
    run = cli(*argv, "--out", out, *swapped)
    assert run.exit_code == 2 and "give the same --text values in the same order" in run.json()["error"]["message"]
