"""A real Triton Inference Server for the tests: ``segmentor-cli serve-triton`` run from the Triton environment.

``nvidia-pytriton`` needs numpy<2, so the server runs from its own virtual environment (``make triton-venv``):
its interpreter is ``$PERCEPTRA_TRITON_PYTHON``, else ``<repo>/.venv-triton/bin/python``. Without either the tests
here skip (``.ci/run`` builds the environment, so they run on CI). Servers listen on free ports of 127.0.0.1 and
are stopped with SIGTERM (SIGKILL after a bound) when their fixture ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

pytest.importorskip("tritonclient.http")

MODELS = ("perceptra_encoder", "perceptra_decoder", "perceptra_info")
REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0


def triton_python() -> Path | None:
    """The Triton environment's interpreter, or ``None`` when there is none."""
    configured = os.environ.get("PERCEPTRA_TRITON_PYTHON")
    path = Path(configured) if configured else REPO / ".venv-triton" / "bin" / "python"
    return path if path.is_file() else None


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports of 127.0.0.1 that are free now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class TritonServer:
    """One ``serve-triton`` process group for the model of ``sections`` (config sections without ``triton``)."""

    def __init__(self, sections: dict[str, Any], directory: Path, **triton: Any) -> None:
        python = triton_python()
        if python is None:
            pytest.skip("no Triton environment: run `make triton-venv` or set PERCEPTRA_TRITON_PYTHON")
        http, grpc, metrics = free_ports(3)
        self.triton = {
            "host": "127.0.0.1",
            "http_port": http,
            "grpc_port": grpc,
            "metrics_port": metrics,
            "max_batch_size": 8,
            "max_queue_delay_ms": 200.0,
            **triton,
        }
        self.sections = sections
        self.config_path = directory / "triton.yaml"
        self.config_path.write_text(yaml.safe_dump({**sections, "triton": self.triton}))
        self.log_path = directory / "triton.log"
        # PyTriton's workspace (a copy of tritonserver, its sockets) in a short-named folder of ours rather than
        # ~/.cache/pytriton, removed in stop() even when the server was killed (UNIX socket paths must stay short)
        self.workspace = Path(tempfile.mkdtemp(prefix="pytriton-"))
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTRITON_HOME": str(self.workspace)}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(python), "-m", "perceptra_seg.cli", "serve-triton", "--config", str(self.config_path)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()

    @property
    def ports(self) -> list[int]:
        return [self.triton["http_port"], self.triton["grpc_port"], self.triton["metrics_port"]]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        base = f"http://127.0.0.1:{self.triton['http_port']}/v2"
        # the server is ready before PyTriton has loaded every model; the models say when they are
        urls = [f"{base}/health/ready"] + [f"{base}/models/{name}/ready" for name in MODELS]
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                pytest.fail(f"serve-triton exited with {self.process.returncode}:\n{self.log()}")
            try:
                if all(httpx.get(url, timeout=2.0).status_code == 200 for url in urls):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        pytest.fail(f"serve-triton not ready after {READY_TIMEOUT_S:g} s:\n{self.log()}")

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def client_sections(self, protocol: str = "http", **triton: Any) -> dict[str, Any]:
        """The same model's config sections for a ``backend: triton`` client of this server."""
        runtime = {**self.sections.get("runtime", {}), "backend": "triton"}
        settings = {**self.triton, "protocol": protocol, "timeout_s": 30.0, **triton}
        return {**self.sections, "runtime": runtime, "triton": settings}

    def metrics(self) -> dict[tuple[str, str], float]:
        """``(metric name, model)`` → value of the ``nv_inference_*`` counters on the metrics port."""
        text = httpx.get(f"http://127.0.0.1:{self.triton['metrics_port']}/metrics", timeout=10.0).text
        values = {}
        for name, model, value in re.findall(r'^(nv_inference_\w+)\{model="([^"]+)"[^}]*\} (\S+)$', text, re.M):
            values[(name, model)] = float(value)
        return values

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL the process hosting the model (mid-request, as a crash would). Its children (tritonserver, the
        backend stubs, Python's resource tracker) exit on their own (PyTriton sets their parent-death signal to
        SIGTERM) and release their shared memory; a stopped group is continued so that they can."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_S)
        self.signal(signal.SIGCONT)

    def _reap_group(self) -> None:
        """Wait (bounded) for the rest of the process group to exit, SIGKILL what is left, and remove shared
        memory regions the server left in /dev/shm (named after its pid by PyTriton)."""
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        self.signal(signal.SIGKILL)
        for region in Path("/dev/shm").glob(f"pytrtion{self.process.pid}-*"):
            region.unlink(missing_ok=True)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()
        shutil.rmtree(self.workspace, ignore_errors=True)
        return int(self.process.returncode)


@pytest.fixture(scope="module")
def sam1_server(small_sam1_config: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """serve-triton hosting the reduced SAM 1 of tests/conftest.py (fp32, CPU)."""
    sections = {**small_sam1_config, "runtime": {"device": "cpu", "precision": "fp32"}}
    server = TritonServer(sections, tmp_path_factory.mktemp("triton_sam1"))
    yield server
    server.stop()
