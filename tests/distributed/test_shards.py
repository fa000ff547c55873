"""The Ray engine's parts that need no cluster: shard names and files, the merge, fsspec planning and reading, and
the errors raised before Ray is contacted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perceptra_seg.cli.batch import ImageJob, plan_jobs
from perceptra_seg.config import SegmentorConfig
from perceptra_seg.distributed import merge_results, plan_batch, read_shards, run_batch, write_merged
from perceptra_seg.distributed.shards import ShardImage, done_ids, shard_name, write_shard
from perceptra_seg.distributed.sources import load_location
from perceptra_seg.exceptions import ConfigError, InvalidInputError
from perceptra_seg.extras import PROJECT_URL
from perceptra_seg.inputs import InputPolicy


def _image(image_id: int, name: str, count: int = 1) -> ShardImage:
    records = [
        {"image_id": image_id, "category_id": 1, "score": 0.5 + k / 10, "annotation_id": k} for k in range(count)
    ]
    return ShardImage(image_id, name, records)


def _job(image_id: int, name: str) -> ImageJob:
    return ImageJob(Path(name), name, image_id, [{"box": [0, 0, 1, 1]}], [1], [None])


def test_a_shard_name_depends_on_its_image_ids_only() -> None:
    assert shard_name([3, 1, 2]) == shard_name([1, 2, 3]) == shard_name(np.array([2, 3, 1]))
    assert shard_name([1, 2]) != shard_name([1, 2, 3])
    assert shard_name([12]) != shard_name([1, 2])  # ids are joined with a separator
    assert shard_name([7]).startswith("part-") and shard_name([7]).endswith(".jsonl")


@pytest.mark.parametrize("as_url", [False, True])
def test_shards_round_trip_atomically_and_idempotently(tmp_path: Path, as_url: bool) -> None:
    folder = tmp_path / "out" / "shards"  # created on the first write
    target = folder.as_uri() if as_url else str(folder)
    first = write_shard(target, [_image(5, "b.png", 2), _image(2, "a.png")])
    again = write_shard(target, [_image(2, "a.png"), _image(5, "b.png", 2)])  # the same block, retried
    assert first == again == shard_name([2, 5])
    write_shard(target, [_image(9, "c.png", 0)])  # an image whose prompts gave no record is still done
    assert sorted(p.name for p in folder.iterdir()) == sorted([first, shard_name([9])])  # no temporary files left
    images = read_shards(target)
    assert sorted(i.image_id for i in images) == [2, 5, 9] and done_ids(target) == {2, 5, 9}
    assert next(i for i in images if i.image_id == 5).records == _image(5, "b.png", 2).records
    with pytest.raises(InvalidInputError, match="at least one image"):
        write_shard(target, [])


def test_missing_folder_has_no_shards_and_foreign_files_are_ignored(tmp_path: Path) -> None:
    assert read_shards(tmp_path / "absent") == []
    (tmp_path / "notes.txt").write_text("not a shard")
    assert read_shards(tmp_path) == []
    (tmp_path / shard_name([1])).write_text("{not json\n")
    with pytest.raises(InvalidInputError, match="line 1 is not a batch shard line"):
        read_shards(tmp_path)


def test_merge_follows_the_job_order_keeps_each_image_once_and_appends_unplanned_images(tmp_path: Path) -> None:
    write_shard(tmp_path, [_image(1, "z.png"), _image(2, "y.png", 2)])
    write_shard(tmp_path, [_image(2, "y.png", 2), _image(3, "x.png")])  # image 2 twice: blocks re-cut
    write_shard(tmp_path, [_image(40, "b-extra.png"), _image(30, "a-extra.png")])
    jobs = [_job(3, "x.png"), _job(2, "y.png"), _job(1, "z.png"), _job(4, "never-run.png")]
    merged = merge_results(tmp_path, jobs)
    assert [(r["image_id"], r["annotation_id"]) for r in merged] == [(3, 0), (2, 0), (2, 1), (1, 0), (30, 0), (40, 0)]
    out = tmp_path / "merged.json"
    assert write_merged(tmp_path, jobs, out) == 6
    text = out.read_text()
    assert text.startswith("[\n{") and text.endswith("}\n]\n") and json.loads(text) == merged
    empty = tmp_path / "empty.json"
    assert write_merged(tmp_path / "none", jobs, empty) == 0 and empty.read_text() == "[]\n"


def test_plan_batch_over_a_file_url_matches_the_local_plan(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.jpg", "sub/notes.txt"):
        (folder / name).write_bytes(b"x")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"a.png": [{"box": [1, 2, 3, 4]}], "b.jpg": [{"points": [[1, 1, 1]]}]}))
    local, _, _ = plan_jobs(folder, prompts)
    remote, no_prompts, no_image = plan_batch(folder.as_uri(), prompts)
    assert [(j.name, j.image_id, j.prompts) for j in remote] == [(j.name, j.image_id, j.prompts) for j in local]
    assert [j.path for j in remote] == [(folder / "a.png").as_uri(), (folder / "sub" / "b.jpg").as_uri()]
    assert no_prompts == [] and no_image == []
    assert [j.path for j in plan_batch(str(folder), prompts)[0]] == [j.path for j in local]  # a plain path
    with pytest.raises(InvalidInputError, match="is not a folder"):
        plan_batch((folder / "a.png").as_uri(), prompts)
    with pytest.raises(ConfigError, match="unknown fsspec protocol"):
        plan_batch("nosuchprotocol://bucket/images", prompts)


def test_coco_point_coords_become_foreground_clicks_of_the_annotations_prompt(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x")
    coco = {
        "images": [{"id": 4, "file_name": "a.png"}],
        "annotations": [
            {"id": 1, "image_id": 4, "bbox": [1, 2, 10, 20]},
            {"id": 2, "image_id": 4, "point_coords": [[5, 6], [7.5, 8]], "category_id": 3},
            {"id": 3, "image_id": 4, "bbox": [0, 0, 4, 4], "point_coords": [[1, 1]]},
        ],
    }
    prompts = tmp_path / "coco.json"
    prompts.write_text(json.dumps(coco))
    (job,), _, _ = plan_batch(folder.as_uri(), prompts)
    assert job.prompts == [
        {"box": [1.0, 2.0, 11.0, 22.0]},
        {"points": [[5.0, 6.0, 1], [7.5, 8.0, 1]]},
        {"box": [0.0, 0.0, 4.0, 4.0], "points": [[1.0, 1.0, 1]]},
    ]
    assert job.categories == [1, 3, 1] and job.annotation_ids == [1, 2, 3]
    coco["annotations"].append({"id": 4, "image_id": 4, "point_coords": []})
    prompts.write_text(json.dumps(coco))
    with pytest.raises(InvalidInputError, match=r"annotations\[3\] needs .* and/or 'point_coords'"):
        plan_batch(folder.as_uri(), prompts)


def test_an_image_read_through_fsspec_decodes_as_the_local_path_does(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(3)
    path = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(path, quality=90)
    policy = InputPolicy.from_config(SegmentorConfig().input)
    np.testing.assert_array_equal(load_location(path.as_uri(), policy), policy.load(path))
    np.testing.assert_array_equal(load_location(str(path), policy), policy.load(path))
    with pytest.raises(InvalidInputError, match="cannot read image"):
        load_location((tmp_path / "missing.png").as_uri(), policy)


def test_run_batch_checks_its_arguments_and_skips_finished_jobs_without_ray(tmp_path: Path) -> None:
    settings = SegmentorConfig()
    jobs = [_job(1, "a.png"), _job(2, "b.png")]
    for kwargs in ({"workers": 0}, {"images_per_shard": 0}, {"gpus_per_worker": -1.0}):
        with pytest.raises(InvalidInputError):
            run_batch(jobs, settings, out_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
    write_shard(tmp_path, [_image(1, "a.png"), _image(2, "b.png")])
    summary = run_batch(jobs, settings, address="127.0.0.1:1", out_dir=tmp_path)  # nothing left: no connection
    assert summary.as_dict() == {
        "images": 2,
        "processed": 0,
        "skipped_existing": 2,
        "failed": [],
        "results_written": 0,
        "shards": [],
    }


def test_without_ray_the_engine_is_a_config_error_naming_the_install_line(tmp_path: Path) -> None:
    code = (
        "import sys, json\nsys.modules['ray'] = None\n"
        "from perceptra_seg.distributed import run_batch\nfrom perceptra_seg.cli.batch import ImageJob\n"
        "from perceptra_seg.config import SegmentorConfig\n"
        "job = ImageJob('a.png', 'a.png', 1, [{'box': [0, 0, 1, 1]}], [1], [None])\n"
        f"try:\n    run_batch([job], SegmentorConfig(), out_dir={str(tmp_path)!r})\n"
        "except Exception as exc:\n    print(json.dumps([type(exc).__name__, str(exc)]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    kind, message = json.loads(run.stdout.strip().splitlines()[-1])
    assert kind == "ConfigError"
    assert f'pip install "perceptra-seg[ray] @ git+{PROJECT_URL}"' in message
