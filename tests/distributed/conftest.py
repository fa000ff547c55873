"""A real two-node Ray cluster on 127.0.0.1 for the Ray batch engine's tests, shared by the whole session.

Both nodes are ``ray start --block`` processes of this test run: a head and a second node joining it, each with 2
logical CPUs, their own temporary folder and free ports for every listener (GCS, node manager, object manager,
client server, dashboard agent, runtime-env agent, metrics, workers), so a concurrent test run or another cluster
on the machine cannot collide with them. Workers import this checkout (``PYTHONPATH``). Both process groups are
killed after the session (and ``ray stop`` is never used: it would stop every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ray", reason="the Ray engine needs the ray extra")
pytest.importorskip("typer", reason="the CLI needs the cli extra")

from typer.testing import CliRunner

from perceptra_seg.cli import app
from perceptra_seg.demo.scenes import generate_scenes

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")
START_TIMEOUT_S = 90


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


@dataclass
class RayNode:
    """One ``ray start --block`` process (its own process group)."""

    process: subprocess.Popen[bytes]
    log: Path

    def descendants(self) -> list[Any]:
        """The node's live processes (raylet, workers, ...) as psutil processes."""
        import psutil

        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL the whole node, as a machine failure would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=20)


@dataclass
class RayCluster:
    """The test cluster: ``address`` is the head's ``HOST:PORT``."""

    address: str
    nodes: list[RayNode]

    def segment_actor_pids(self) -> list[int]:
        """Process ids of the live model actors of this cluster (their process title names ``_SegmentActor``)."""
        pids = []
        for node in self.nodes:
            for proc in node.descendants():
                with contextlib.suppress(Exception):
                    if "_SegmentActor" in " ".join(proc.cmdline()):
                        pids.append(proc.pid)
        return pids


def _start_node(temp: Path, env: dict[str, str], *, head_port: int, head: bool) -> RayNode:
    ports = free_ports(8 + 16)
    named = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port"]
    named += ["--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port"]
    args = [str(RAY), "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--num-gpus=0"]
    args += ["--object-store-memory", str(200 * 1024 * 1024), "--disable-usage-stats"]
    args += [f"{flag}={port}" for flag, port in zip(named, ports, strict=False)]
    args += ["--worker-port-list", ",".join(str(p) for p in ports[8:])]
    if head:
        args += ["--head", f"--port={head_port}", f"--ray-client-server-port={ports[6]}"]
        args += ["--include-dashboard=false", f"--temp-dir={temp}"]
    else:
        args += [f"--address=127.0.0.1:{head_port}"]
    log = temp.parent / ("head.log" if head else "node.log")
    with log.open("wb") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return RayNode(process, log)


def _wait_for_nodes(address: str, count: int, nodes: list[RayNode]) -> None:
    import ray

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        for node in nodes:
            if node.process.poll() is not None:
                raise AssertionError(f"a Ray node exited at start-up:\n{node.log.read_text()[-3000:]}")
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
            try:
                alive = [n for n in ray.nodes() if n["Alive"]]
            finally:
                ray.shutdown()
            if len(alive) >= count:
                return
        except (ConnectionError, RuntimeError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the Ray test cluster did not come up:\n{nodes[0].log.read_text()[-3000:]}")
        time.sleep(1)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A head plus a second node on 127.0.0.1 (free ports, a short private temp folder), killed after."""
    folder = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    temp = folder / "t"
    temp.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_worker_niceness"] = "0"  # Ray's default 15 lets any other load on a busy test machine starve the actors
    env["RAY_health_check_period_ms"] = "500"  # a killed node is noticed within about 2 s instead of ~15 s
    env["RAY_health_check_timeout_ms"] = "500"
    env["RAY_health_check_failure_threshold"] = "3"
    # Ray 2.5x turns token authentication on whenever ~/.ray/auth_token exists (any earlier ray.init() on the
    # machine writes one); this loopback-only cluster and its drivers (this process) run without it.
    env["RAY_AUTH_MODE"] = "disabled"
    saved_mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    head_port = free_ports(1)[0]
    address = f"127.0.0.1:{head_port}"
    nodes = [_start_node(temp, env, head_port=head_port, head=True)]
    try:
        _wait_for_nodes(address, 1, nodes)
        nodes.append(_start_node(temp, env, head_port=head_port, head=False))
        _wait_for_nodes(address, 2, nodes)
        yield RayCluster(address, nodes)
    finally:
        for node in reversed(nodes):
            node.kill()
        shutil.rmtree(folder, ignore_errors=True)
        if saved_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved_mode


@dataclass
class Run:
    """Outcome of one in-process CLI call."""

    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture(scope="session")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged demo model on the CPU with one intra-op thread: both engines then sum floats in the same order
    (a Ray actor gets the threads it reserves, a local process every core), so their results are bit-identical."""
    path = tmp_path_factory.mktemp("ray_config") / "config.yaml"
    path.write_text("model:\n  name: demo\nruntime:\n  device: cpu\n  num_threads: 1\n")
    return path


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, config_file: Path) -> Callable[..., Run]:
    """``cli("batch", ...)``: segmentor-cli in-process with :func:`config_file` (unless ``--config`` is given)."""
    for name in list(os.environ):
        if name.startswith("SEGMENTOR_"):
            monkeypatch.delenv(name)
    runner = CliRunner()

    def invoke(*args: str | Path) -> Run:
        argv = [str(a) for a in args]
        if "--config" not in argv:
            argv += ["--config", str(config_file)]
        result = runner.invoke(app, argv)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Run(result.exit_code, result.stdout, result.stderr)

    return invoke


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(image folder, COCO annotations)``: 12 demo scenes (PNG, three sizes, two in a subfolder), one annotation
    per object with its own annotation id and a category per shape kind; its prompt is the object's box, one click
    inside it (``point_coords``) or both, in turn."""
    root = tmp_path_factory.mktemp("ray_dataset")
    folder = root / "images"
    (folder / "sub").mkdir(parents=True)
    kinds: dict[str, int] = {}
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": []}
    scenes = generate_scenes(2024, 12, [(96, 128), (128, 96), (112, 112)])
    for index, scene in enumerate(scenes):
        name = f"sub/scene{index:02d}.png" if index % 5 == 4 else f"scene{index:02d}.png"
        Image.fromarray(scene.image).save(folder / name)
        image_id = 500 + 3 * index
        coco["images"].append({"id": image_id, "file_name": Path(name).name})
        for obj in scene.objects:
            ys, xs = np.nonzero(obj.mask)
            x, y = int(xs.min()), int(ys.min())
            box = [x, y, int(xs.max()) + 1 - x, int(ys.max()) + 1 - y]
            category = kinds.setdefault(obj.kind, len(kinds) + 1)
            ann_id = 9000 + len(coco["annotations"])
            ann: dict[str, Any] = {"id": ann_id, "image_id": image_id, "category_id": category, "bbox": box}
            inside = [int(xs[len(xs) // 2]), int(ys[len(ys) // 2])]  # a pixel of the object
            if ann_id % 3 == 1:  # a click instead of the box
                ann["point_coords"] = [inside]
                del ann["bbox"]
            elif ann_id % 3 == 2:  # box and click together
                ann["point_coords"] = [inside]
            coco["annotations"].append(ann)
    coco["categories"] = [{"id": i, "name": k} for k, i in kinds.items()]
    annotations = root / "instances.json"
    annotations.write_text(json.dumps(coco))
    return folder, annotations


@pytest.fixture(scope="session")
def local_results(dataset: tuple[Path, Path], config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes ``batch --engine local`` writes for :func:`dataset` (the reference of every Ray run)."""
    folder, annotations = dataset
    out = tmp_path_factory.mktemp("local") / "results.json"
    argv = ["batch", "--images", str(folder), "--prompts", str(annotations), "--out", str(out), "--json"]
    result = CliRunner().invoke(app, [*argv, "--config", str(config_file)])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["processed"] == 12
    return out.read_bytes()
