"""The installed ``segmentor-cli`` console script, run as a real process: one segmentation and the REST service."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from perceptra_seg.utils.masks import png_to_mask


def _console_script() -> str:
    found = shutil.which("segmentor-cli", path=str(Path(sys.executable).parent)) or shutil.which("segmentor-cli")
    if found is None:
        pytest.skip("segmentor-cli is not installed (pip install -e '.[cli]')")
    return found


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTOR_")}
    env["HF_HUB_OFFLINE"] = "1"
    return env


def test_console_script_segment_box_matches_the_sdk(
    config_file: Path, images: dict[str, Path], small_segmentor: Any, tmp_path: Path
) -> None:
    out = tmp_path / "mask.png"
    done = subprocess.run(
        [
            _console_script(),
            "segment-box",
            "--config",
            str(config_file),
            "--image",
            str(images["chelsea"]),
            "--box",
            "5",
            "5",
            "80",
            "55",
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    expected = small_segmentor.segment_from_box(images["chelsea"], box=(5, 5, 80, 55), output_formats=["numpy"])
    np.testing.assert_array_equal(png_to_mask(out.read_bytes()), expected.mask)
    assert '"area": ' + str(expected.area) in done.stdout

    failed = subprocess.run(
        [
            _console_script(),
            "segment-box",
            "--config",
            str(config_file),
            "--image",
            str(tmp_path / "absent.png"),
            "--box",
            "5",
            "5",
            "80",
            "55",
        ],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=180,
        check=False,
    )
    assert failed.returncode == 2
    assert failed.stderr == f"error: image file not found: {str(tmp_path / 'absent.png')!r}\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_starts_the_service_with_the_config_file_and_flags(
    small_sam1_config: dict[str, Any], tmp_path: Path
) -> None:
    pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    # The file asks for CUDA; the --device flag must win, or the model cannot load on this machine.
    sections = {**small_sam1_config, "runtime": {"device": "cuda"}, "logging": {"format": "text", "level": "WARNING"}}
    config = tmp_path / "service.yaml"
    config.write_text(yaml.safe_dump(sections))
    port = _free_port()
    process = subprocess.Popen(
        [_console_script(), "serve", "--config", str(config), "--port", str(port), "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_environment(),
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        ready = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = httpx.get(f"{base}/v1/healthz", timeout=2)
                ready = httpx.get(f"{base}/v1/readyz", timeout=2)
                if health.status_code == 200 and ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert ready is not None and ready.status_code == 200, ready.text if ready is not None else "no answer"
        info = ready.json()["model_info"]
        assert (info["model"], info["variant"], info["device"]) == ("sam_v1", "vit_b", "cpu")
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
