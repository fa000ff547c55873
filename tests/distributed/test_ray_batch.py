"""``batch --engine ray`` on a real two-node Ray cluster: the local engine's exact results, resuming from the shards,
a killed model actor, automatic masks (``--auto``), jobs the cluster cannot run, a model that cannot load, the errors
that need no cluster, and (last: it leaves the head alone) a killed second node."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pycocotools import mask as mask_utils

from perceptra_seg.cli.batch import plan_jobs, stable_image_id
from perceptra_seg.config import SegmentorConfig
from perceptra_seg.distributed import read_shards, run_batch, write_merged
from perceptra_seg.distributed.shards import shard_name

from .conftest import RayCluster, Run, free_ports

KILL_DEADLINE_S = 120


def _shard_ids(folder: Path) -> list[int]:
    return [image.image_id for image in read_shards(folder)]


def test_ray_engine_on_two_nodes_writes_the_local_engines_file_and_resumes_from_its_shards(
    cli: Callable[..., Run],
    ray_cluster: RayCluster,
    dataset: tuple[Path, Path],
    local_results: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder, annotations = dataset
    out = tmp_path / "results.json"
    argv = ["batch", "--engine", "ray", "--ray-address", ray_cluster.address, "--workers", "2"]
    argv += ["--images", folder.as_uri(), "--prompts", annotations, "--out", out, "--json"]
    run = cli(*argv)
    assert run.exit_code == 0, run.stderr
    summary = run.json()
    assert summary["engine"] == "ray" and summary["processed"] == 12 and summary["failed"] == []
    assert out.read_bytes() == local_results  # same records, same RLEs, same order, same formatting
    records = json.loads(out.read_text())
    assert summary["results_written"] == len(records)
    for record in records:  # real COCO RLEs that decode to the image's size
        assert mask_utils.decode(record["segmentation"]).shape[:2] == tuple(record["segmentation"]["size"])
    shards = tmp_path / "results.shards"
    ids = _shard_ids(shards)
    assert sorted(ids) == sorted({r["image_id"] for r in records}) and len(ids) == 12  # each image once
    assert len(list(shards.glob("part-*.jsonl"))) == 2  # 12 images in blocks of at most 8: 2 blocks of 6
    for shard in shards.glob("part-*.jsonl"):  # a shard's name is derived from its image ids
        lines = [json.loads(line) for line in shard.read_text().splitlines()]
        assert len(lines) == 6 and shard.name == shard_name(line["image_id"] for line in lines)

    run = cli(*argv)  # everything is in the shards: nothing runs (Ray is not even contacted)
    assert run.exit_code == 0, run.stderr
    assert run.json()["processed"] == 0 and run.json()["skipped_existing"] == 12
    assert out.read_bytes() == local_results

    removed = sorted(shards.glob("part-*.jsonl"))[0]
    lost = len(removed.read_text().splitlines())
    removed.unlink()
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)  # no --ray-address, no --workers: Ray's default address
    run = cli("batch", "--engine", "ray", "--images", folder, "--prompts", annotations, "--out", out, "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["processed"] == lost and run.json()["skipped_existing"] == 12 - lost
    assert out.read_bytes() == local_results
    assert sorted(_shard_ids(shards)) == sorted(ids)


def test_a_killed_model_actor_is_restarted_and_every_image_is_written_exactly_once(
    ray_cluster: RayCluster, dataset: tuple[Path, Path], config_file: Path, local_results: bytes, tmp_path: Path
) -> None:
    folder, annotations = dataset
    jobs, _, _ = plan_jobs(folder, annotations)
    shards = tmp_path / "shards"
    killed: list[int] = []
    seen: set[int] = set()
    stop = threading.Event()

    def killer() -> None:  # once two shards exist, SIGKILL the (only) model actor; then watch it come back
        import os
        import signal

        while not stop.is_set():
            pids = ray_cluster.segment_actor_pids()
            seen.update(pids)
            if not killed and pids and len(list(shards.glob("part-*.jsonl"))) >= 2:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.02)

    watcher = threading.Thread(target=killer, daemon=True)
    watcher.start()
    settings = SegmentorConfig.resolve(config_file)
    progress: list[tuple[int, int]] = []
    try:
        summary = run_batch(
            jobs,
            settings,
            address=ray_cluster.address,
            workers=1,
            out_dir=shards.as_uri(),
            images_per_shard=1,
            progress=lambda done, total: progress.append((done, total)),
        )
    finally:
        stop.set()
        watcher.join(timeout=5)
    assert killed, "the model actor was never seen alive with shards written"
    assert seen - set(killed), "no model actor process replaced the killed one"
    assert summary.processed == 12 and summary.failed == [] and len(summary.shards) == 12
    assert progress[-1] == (12, 12) and [done for done, _ in progress] == list(range(1, 13))
    ids = _shard_ids(shards)
    assert sorted(ids) == sorted(job.image_id for job in jobs)  # every image exactly once
    out = tmp_path / "merged.json"
    write_merged(shards, jobs, out)
    assert out.read_bytes() == local_results


def test_an_unreachable_or_malformed_ray_address_is_a_clear_error(
    cli: Callable[..., Run], dataset: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, annotations = dataset
    out = tmp_path / "results.json"
    common = ["--images", folder, "--prompts", annotations, "--out", out]
    port = free_ports(1)[0]  # nothing listens there
    run = cli("batch", "--engine", "ray", "--ray-address", f"127.0.0.1:{port}", *common)
    assert run.exit_code == 2
    assert f"cannot reach a Ray cluster at 127.0.0.1:{port}" in run.stderr
    run = cli("batch", "--engine", "ray", "--ray-address", "no-port-here", *common)
    assert run.exit_code == 2 and "--ray-address must be 'auto' or HOST:PORT" in run.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "4"], "the Ray cluster has 4 CPUs; 4 model actor(s) × 1 CPU"),  # none left for decoding
        (["--gpus-per-worker", "1"], "the Ray cluster has 0 GPUs; 1 model actor(s) × 1 GPU need 1"),
    ],
)
def test_a_job_the_cluster_cannot_run_is_refused_instead_of_waiting_forever(
    cli: Callable[..., Run],
    ray_cluster: RayCluster,
    dataset: tuple[Path, Path],
    tmp_path: Path,
    flags: list[str],
    message: str,
) -> None:
    folder, annotations = dataset
    out = tmp_path / "results.json"
    argv = ["batch", "--engine", "ray", "--ray-address", ray_cluster.address, *flags]
    run = cli(*argv, "--images", folder, "--prompts", annotations, "--out", out)
    assert run.exit_code == 2 and message in run.stderr
    assert not out.exists() and not (tmp_path / "results.shards").exists()


def test_model_actors_that_cannot_load_the_model_fail_the_job_with_the_loaders_message(
    cli: Callable[..., Run], ray_cluster: RayCluster, dataset: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, annotations = dataset
    missing = tmp_path / "missing.pth"  # the actors, not the driver, load the model: they find no checkpoint
    config = tmp_path / "config.yaml"
    config.write_text(
        f"model:\n  name: sam_v1\n  variant: vit_b\n  checkpoint_path: {missing}\n"
        "runtime:\n  device: cpu\n  num_threads: 1\n"
    )
    out = tmp_path / "results.json"
    argv = ["batch", "--engine", "ray", "--ray-address", ray_cluster.address, "--config", config]
    run = cli(*argv, "--images", folder, "--prompts", annotations, "--out", out)
    assert run.exit_code == 1
    assert "the Ray job failed: " in run.stderr and f"checkpoint not found: {missing}" in run.stderr
    assert "Traceback" not in run.stderr and not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "2"], "--workers apply to --engine ray only"),
        (["--ray-address", "auto", "--gpus-per-worker", "1"], "--ray-address, --gpus-per-worker apply to --engine"),
        (["--engine", "ray", "--format", "coco-polygons"], "--engine ray writes coco-rle results"),
    ],
)
def test_ray_options_are_refused_where_they_do_nothing(
    cli: Callable[..., Run], dataset: tuple[Path, Path], tmp_path: Path, extra: list[str], message: str
) -> None:
    folder, annotations = dataset
    run = cli("batch", "--images", folder, "--prompts", annotations, "--out", tmp_path / "r.json", *extra)
    assert run.exit_code == 2 and message in run.stderr


def test_the_local_engine_refuses_an_image_url(
    cli: Callable[..., Run], dataset: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, annotations = dataset
    run = cli("batch", "--images", folder.as_uri(), "--prompts", annotations, "--out", tmp_path / "r.json")
    assert run.exit_code == 2 and "URLs need --engine ray" in run.stderr


def test_ray_auto_masks_are_the_local_engines_records(
    cli: Callable[..., Run], ray_cluster: RayCluster, dataset: tuple[Path, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    names = ["scene01.png", "scene02.png", "sub/scene04.png"]  # one in a subfolder
    for name in names:
        shutil.copy(dataset[0] / name, folder / name)
    grid = ["--auto", "--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
    local = tmp_path / "local.json"
    run = cli("batch", "--images", folder, *grid, "--out", local, "--json")
    assert run.exit_code == 0 and run.json()["processed"] == 3, run.stderr
    out = tmp_path / "ray.json"
    argv = ["batch", "--engine", "ray", "--ray-address", ray_cluster.address]
    argv += ["--images", folder.as_uri(), *grid, "--out", out, "--json"]
    run = cli(*argv)
    assert run.exit_code == 0, run.stderr
    assert run.json()["processed"] == 3 and run.json()["failed"] == []
    records = json.loads(out.read_text())
    assert run.json()["results_written"] == len(records) > 3
    assert out.read_bytes() == local.read_bytes()  # same masks, scores and RLE strings, same order
    assert {r["image_id"] for r in records} == {stable_image_id(name) for name in names}
    for record in records:
        assert mask_utils.decode(record["segmentation"]).shape[:2] == tuple(record["segmentation"]["size"])
    run = cli(*argv)  # resumed from the shards: nothing runs again
    assert run.json()["processed"] == 0 and run.json()["skipped_existing"] == 3
    assert out.read_bytes() == local.read_bytes()


def test_losing_the_second_node_mid_job_still_writes_every_image_exactly_once(
    ray_cluster: RayCluster, dataset: tuple[Path, Path], config_file: Path, local_results: bytes, tmp_path: Path
) -> None:
    # The last test of the module that needs two nodes: the cluster keeps only its head afterwards.
    folder, annotations = dataset
    jobs, _, _ = plan_jobs(folder, annotations)
    shards = tmp_path / "shards"
    killed = threading.Event()
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set():
            if len(list(shards.glob("part-*.jsonl"))) >= 2:
                ray_cluster.nodes[1].kill()  # SIGKILL to every process of the node: raylet, workers, actors
                killed.set()
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=killer, daemon=True)
    watcher.start()
    try:
        summary = run_batch(
            jobs,
            SegmentorConfig.resolve(config_file),
            address=ray_cluster.address,
            workers=1,  # the head alone (2 CPUs) still fits one actor plus a decode task
            out_dir=shards,
            images_per_shard=1,
        )
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert killed.is_set() and ray_cluster.nodes[1].process.poll() is not None
    assert summary.processed == 12 and summary.failed == []
    assert sorted(_shard_ids(shards)) == sorted(job.image_id for job in jobs)  # every image exactly once
    out = tmp_path / "merged.json"
    write_merged(shards, jobs, out)
    assert out.read_bytes() == local_results
