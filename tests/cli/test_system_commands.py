"""info, config show, download (local HTTP server; --force, progress bar), serve (uvicorn arguments), export-onnx,
and the install hint."""

from __future__ import annotations

import hashlib
import http.server
import importlib
import io
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import yaml
from rich.console import Console

from perceptra_seg.cli import progress as progress_module
from perceptra_seg.exceptions import ConfigError
from perceptra_seg.hardware import CpuFeatures
from perceptra_seg.utils.masks import png_to_mask

from ..cpus import AVX2_ONLY, AVX512_BF16, pretend_cpu
from .conftest import Run


class _Files(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        body = self.files.get(self.path.lstrip("/"))
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def mirror() -> Iterator[tuple[str, type[_Files]]]:
    """A checkpoint mirror on 127.0.0.1 serving ``handler.files`` by name."""
    handler = type("Handler", (_Files,), {"files": {}, "requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def sam2_like_checkpoint(path: Path) -> bytes:
    """A small file laid out like Meta's SAM 2 checkpoints (``{"model": state_dict}`` in torch's zip format)."""
    import torch

    state = {"image_encoder.trunk.pos_embed": torch.ones(1, 8, 7, 7), "sam_mask_decoder.iou_token": torch.ones(8)}
    torch.save({"model": state}, path)
    return path.read_bytes()


def _mirror_config(tmp_path: Path, base_url: str) -> tuple[Path, Path]:
    cache = tmp_path / "cache"
    config = tmp_path / "mirror.yaml"
    config.write_text(yaml.safe_dump({"model": {"download_base_url": base_url, "cache_dir": str(cache)}}))
    return config, cache


def test_download_fetches_into_the_cache_and_info_lists_it(
    cli: Callable[..., Run], mirror: tuple[str, type[_Files]], tmp_path: Path
) -> None:
    base, handler = mirror
    body = sam2_like_checkpoint(tmp_path / "source.pt")  # a SAM 2 name has no hash: the file must load
    handler.files["sam2.1_hiera_tiny.pt"] = body
    config, cache = _mirror_config(tmp_path, base)
    run = cli("download", "-c", config, "--model", "sam_v2", "--variant", "hiera_tiny", "--json")
    assert run.exit_code == 0, run.stderr
    report = run.json()
    assert report["downloaded"] is True and report["kind"] == "meta"
    assert report["path"] == str(cache / "sam2.1_hiera_tiny.pt")
    assert (cache / "sam2.1_hiera_tiny.pt").read_bytes() == body
    assert handler.requests == ["/sam2.1_hiera_tiny.pt"]

    run = cli("download", "-c", config, "--model", "sam_v2", "--variant", "hiera_tiny")
    assert run.exit_code == 0 and run.stdout.startswith("sam_v2/hiera_tiny: already present: ")
    assert len(handler.requests) == 1  # nothing fetched the second time

    run = cli("info", "-c", config, "--json", "--device", "cpu")
    assert run.exit_code == 0, run.stderr
    info = run.json()
    assert info["cache_dir"] == str(cache) and info["cached_checkpoints"] == ["sam2.1_hiera_tiny.pt"]
    assert info["device"]["selected"] == "cpu" and info["backends"]["torch"]["available"] is True
    assert info["config"]["model"]["download_base_url"] == base


def test_download_rejects_a_file_with_the_wrong_hash(
    cli: Callable[..., Run], mirror: tuple[str, type[_Files]], tmp_path: Path
) -> None:
    base, handler = mirror
    body = b"definitely not SAM ViT-B" * 100
    assert not hashlib.sha256(body).hexdigest().startswith("01ec64")
    handler.files["sam_vit_b_01ec64.pth"] = body
    config, cache = _mirror_config(tmp_path, base)
    run = cli("download", "-c", config, "--model", "sam_v1", "--variant", "vit_b")
    assert run.exit_code == 1
    progress, error = run.stderr.splitlines()  # the download's progress log, then the one-line error
    assert progress.startswith("INFO perceptra_seg.weights: downloading http://127.0.0.1:")
    assert error.startswith("error: download of ") and "is corrupted: sha256" in error
    assert not (cache / "sam_vit_b_01ec64.pth").exists() and list(cache.iterdir()) == []

    run = cli("download", "-c", config, "--model", "sam_v2", "--variant", "hiera_large")  # 404 on the mirror
    assert run.exit_code == 1 and "HTTP 404" in run.stderr


def test_download_offline_without_cache_says_where_to_put_the_file(
    cli: Callable[..., Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGMENTOR_MODEL_OFFLINE", "true")
    monkeypatch.setenv("SEGMENTOR_MODEL_CACHE_DIR", str(tmp_path))
    run = cli("download", "--model", "sam_v1", "--variant", "vit_l")
    assert run.exit_code == 1
    assert f"put sam_vit_l_0b3195.pth at {tmp_path / 'sam_vit_l_0b3195.pth'}" in run.stderr


def test_download_of_the_packaged_demo_model_fetches_nothing(
    cli: Callable[..., Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGMENTOR_MODEL_CACHE_DIR", str(tmp_path))
    run = cli("download", "--model", "demo", "--json")
    assert run.exit_code == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["downloaded"] is False and Path(data["path"]).name == "sam_demo_tiny.pth"
    assert Path(data["path"]).parent.name == "assets" and not any(tmp_path.iterdir())


def test_download_of_a_hub_id_fetches_config_and_safetensors(
    cli: Callable[..., Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls: list[tuple[str, list[str]]] = []

    def fake_snapshot_download(repo_id: str, *, allow_patterns: list[str]) -> str:
        calls.append((repo_id, allow_patterns))
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    run = cli("download", "--model", "sam_v2", "--checkpoint", "facebook/sam2.1-hiera-small", "--json")
    assert run.exit_code == 0, run.stderr
    assert calls == [("facebook/sam2.1-hiera-small", ["*.json", "*.safetensors"])]
    assert run.json()["kind"] == "hub" and run.json()["path"] == str(tmp_path / "snapshot")

    def offline(repo_id: str, *, allow_patterns: list[str]) -> str:
        raise OSError("offline mode is enabled")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    run = cli("download", "--model", "sam_v2", "--checkpoint", "facebook/sam2.1-hiera-small")
    assert run.exit_code == 1
    assert run.stderr == (
        "error: cannot fetch facebook/sam2.1-hiera-small from the Hugging Face hub: offline mode is enabled\n"
    )


def test_config_show_applies_yaml_env_and_flags(
    cli: Callable[..., Run], config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGMENTOR_POSTPROCESS_MIN_HOLE_AREA", "25")
    monkeypatch.setenv("SEGMENTOR_RUNTIME_PRECISION", "bf16")
    run = cli("config", "show", "-c", config_file, "--precision", "fp16", "--variant", "vit_l")
    assert run.exit_code == 0, run.stderr
    shown = yaml.safe_load(run.stdout)
    assert shown["model"]["name"] == "sam_v1" and shown["model"]["variant"] == "vit_l"  # YAML, then the flag
    assert shown["model"]["architecture"]["vision_config"]["hidden_size"] == 64  # from the YAML file
    assert shown["postprocess"]["min_hole_area"] == 25  # environment
    assert shown["runtime"]["precision"] == "fp16"  # flag beats environment
    monkeypatch.setenv("SEGMENTOR_CONFIG", str(config_file))  # --config's default
    monkeypatch.setenv("SEGMENTOR_SERVER_API_KEYS", '["very-secret-key"]')
    run = cli("config", "show", "--json")
    as_json = json.loads(run.stdout)
    assert as_json["model"]["checkpoint_path"] == shown["model"]["checkpoint_path"]
    assert as_json["runtime"]["precision"] == "bf16"
    assert len(as_json["server"]["api_keys"]) == 1 and "very-secret-key" not in run.stdout  # masked


def test_info_reports_a_cuda_request_without_cuda(cli: Callable[..., Run], tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run = cli("info", "--device", "cuda", "--json")
    assert run.exit_code == 0, run.stderr
    device = run.json()["device"]
    assert device["selected"] is None and "CUDA is not available" in device["error"]
    run = cli("info", "--device", "cpu")
    assert run.exit_code == 0 and "device:   cpu (requested cpu)" in run.stdout
    assert "backend:  torch: available" in run.stdout


def test_serve_runs_uvicorn_with_the_service_app_and_passes_config_and_flags(
    cli: Callable[..., Run], config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    package_logger = logging.getLogger("perceptra_seg")
    outside = (package_logger.level, list(package_logger.handlers))

    def fake_run(*args: Any, **kwargs: Any) -> None:
        calls.append((args, kwargs))
        # the service's own logging set-up must see the package logger as the CLI found it
        assert (package_logger.level, package_logger.handlers) == outside

    monkeypatch.setattr(uvicorn, "run", fake_run)
    for name in ("SEGMENTOR_CONFIG", "SEGMENTOR_RUNTIME_DEVICE", "SEGMENTOR_MODEL_VARIANT"):
        monkeypatch.setenv(name, "")  # recorded, so that what serve exports is removed again after the test
        monkeypatch.delenv(name)
    run = cli("serve", "-c", config_file, "--port", 9123, "--workers", 2, "--device", "cpu", "--variant", "vit_b")
    assert run.exit_code == 0, run.stderr
    ((args, kwargs),) = calls
    assert args == ("perceptra_seg.service.main:app",)
    from perceptra_seg.service.connections import HeaderTimeoutH11Protocol

    assert kwargs == {
        "host": "127.0.0.1",
        "port": 9123,
        "workers": 2,
        "factory": False,
        "log_config": None,
        "http": HeaderTimeoutH11Protocol,
        "timeout_keep_alive": 5,
        "limit_concurrency": 256,
        "h11_max_incomplete_event_size": 16384,
        "ws_max_size": 72 * 1024 * 1024,
    }
    assert os.environ["SEGMENTOR_CONFIG"] == str(config_file.resolve())
    assert os.environ["SEGMENTOR_RUNTIME_DEVICE"] == "cpu" and os.environ["SEGMENTOR_MODEL_VARIANT"] == "vit_b"

    run = cli("serve", "-c", config_file, "--model", "nope")
    assert run.exit_code == 2 and "unknown model" in run.stderr and len(calls) == 1  # never started


def test_export_onnx_then_segment_with_the_onnx_backend(
    cli: Callable[..., Run], config_file: Path, images: dict[str, Path], small_segmentor: Any, tmp_path: Path
) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx"
    run = cli("export-onnx", "-c", config_file, "--out", out, "--json")
    assert run.exit_code == 0, run.stderr
    report = run.json()
    assert report["manifest"] == str(out / "manifest.json") and report["precision"] == "fp32"
    assert (report["model"], report["variant"], report["opset"]) == ("sam_v1", "vit_b", 17)
    assert set(report["graphs"]) == {"encoder", "decoder_single", "decoder_multi"}
    assert all((out / g["file"]).stat().st_size == g["bytes"] for g in report["graphs"].values())
    published = {p.name for p in out.iterdir()} | {p.name for p in tmp_path.iterdir() if p.name.startswith(".")}
    assert published == {"manifest.json", *(g["file"] for g in report["graphs"].values())}  # no scratch left

    onnx_config = tmp_path / "onnx.yaml"
    onnx_config.write_text(config_file.read_text() + yaml.safe_dump({"onnx": {"model_dir": str(out)}}))
    mask_png = tmp_path / "mask.png"
    run = cli(
        "segment-box",
        "-c",
        onnx_config,
        "--backend",
        "onnx",
        "-i",
        images["coffee"],
        "--box",
        20,
        10,
        90,
        70,
        "-o",
        mask_png,
    )
    assert run.exit_code == 0, run.stderr
    expected = small_segmentor.segment_from_box(images["coffee"], box=(20, 10, 90, 70), output_formats=["numpy"])
    got = png_to_mask(mask_png.read_bytes())
    iou = np.logical_and(got, expected.mask).sum() / np.logical_or(got, expected.mask).sum()
    assert iou >= 0.98

    run = cli("export-onnx", "-c", config_file, "--out", tmp_path / "x", "--quantize", "int8", "--fp16")
    assert run.exit_code == 2 and "not both" in run.stderr


def test_import_without_typer_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "perceptra_seg.cli" or m.startswith("perceptra_seg.cli.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "typer", None)  # what an uninstalled module looks like to import
    cli_package = importlib.import_module("perceptra_seg.cli")
    with pytest.raises(ConfigError, match=r"pip install \"perceptra-seg\[cli\] @ git\+https://github.com/perceptra/"):
        cli_package.app  # noqa: B018


# --- download --force and the progress bar -------------------------------------------------------------------


def _terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """Make the CLI's bar console a terminal writing into a buffer (CliRunner's streams are not terminals)."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    monkeypatch.setattr(progress_module, "stderr_console", lambda: console)
    return buffer


def test_download_force_replaces_a_corrupt_cached_file(
    cli: Callable[..., Run], mirror: tuple[str, type[_Files]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    base, handler = mirror
    good = sam2_like_checkpoint(tmp_path / "source.pt")
    handler.files["sam2.1_hiera_tiny.pt"] = good
    config, cache = _mirror_config(tmp_path, base)
    cache.mkdir()
    cached = cache / "sam2.1_hiera_tiny.pt"
    cached.write_bytes(good[:1000])  # what an interrupted copy leaves
    run = cli("download", "-c", config, "--model", "sam_v2", "--variant", "hiera_tiny")
    assert run.exit_code == 1 and handler.requests == []
    assert f"the cached checkpoint {cached} is unusable" in run.stderr and "--force" in run.stderr
    run = cli("download", "-c", config, "--model", "sam_v2", "--variant", "hiera_tiny", "--force", "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["downloaded"] is True and cached.read_bytes() == good
    assert handler.requests == ["/sam2.1_hiera_tiny.pt"]


def test_download_draws_a_bar_on_a_terminal_and_not_with_json(
    cli: Callable[..., Run], mirror: tuple[str, type[_Files]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    base, handler = mirror
    handler.files["sam2.1_hiera_tiny.pt"] = sam2_like_checkpoint(tmp_path / "source.pt")
    config, _ = _mirror_config(tmp_path, base)
    screen = _terminal(monkeypatch)
    run = cli("download", "-c", config, "--model", "sam_v2", "--variant", "hiera_tiny", "--json")
    assert run.exit_code == 0 and screen.getvalue() == ""  # --json: no bar
    run = cli("download", "-c", config, "--model", "sam_v2", "--variant", "hiera_tiny", "--force")
    assert run.exit_code == 0, run.stderr
    drawn = screen.getvalue()
    assert "downloading sam2.1_hiera_tiny.pt" in drawn and "━" in drawn  # the bar itself
    assert "downloading" not in run.stdout  # stdout stays the command's own output


def test_segment_box_draws_the_bar_while_it_downloads_the_checkpoint(
    cli: Callable[..., Run],
    mirror: tuple[str, type[_Files]],
    tmp_path: Path,
    images: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The segment commands install the same hook; the served file is not a real model, so loading then fails."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    base, handler = mirror
    handler.files["sam2.1_hiera_tiny.pt"] = sam2_like_checkpoint(tmp_path / "source.pt")
    config, cache = _mirror_config(tmp_path, base)
    screen = _terminal(monkeypatch)
    run = cli(
        "segment-box",
        "-c",
        config,
        "--model",
        "sam_v2",
        "--variant",
        "hiera_tiny",
        "--device",
        "cpu",
        "--image",
        images["coffee"],
        "--box",
        "10",
        "10",
        "50",
        "50",
    )
    assert handler.requests == ["/sam2.1_hiera_tiny.pt"] and (cache / "sam2.1_hiera_tiny.pt").is_file()
    assert "downloading sam2.1_hiera_tiny.pt" in screen.getvalue()
    assert run.exit_code == 1 and run.stderr.startswith("error: ")


@pytest.mark.parametrize(
    ("cpu", "variant", "resolved", "reason"),
    [
        (AVX2_ONLY, "vit_b", "fp32", "without native bf16"),
        (AVX512_BF16, "vit_b", "bf16", "measured at IoU >= 0.97"),
        (AVX512_BF16, "vit_h", "fp32", "not measured to keep IoU >= 0.97"),
    ],
    ids=["avx2-vit_b", "avx512-bf16-vit_b", "avx512-bf16-vit_h"],
)
def test_info_shows_cpu_features_and_what_auto_picks(
    cli: Callable[..., Run],
    monkeypatch: pytest.MonkeyPatch,
    cpu: CpuFeatures,
    variant: str,
    resolved: str,
    reason: str,
) -> None:
    pretend_cpu(monkeypatch, cpu)
    args = ("info", "--model", "sam_v1", "--variant", variant, "--device", "cpu")
    report = cli(*args, "--json").json()
    assert report["cpu"]["avx512_bf16"] is cpu.avx512_bf16 and report["cpu"]["native_bf16"] is cpu.native_bf16
    assert report["cpu"]["model"] == cpu.model
    assert report["precision"]["requested"] == "auto" and report["precision"]["resolved"] == resolved
    assert reason in report["precision"]["reason"]
    text = cli(*args).stdout
    assert f"features: {', '.join(cpu.names())} (from test)" in text
    assert f"precision: auto -> {resolved} (" in text
    explicit = cli(*args, "--precision", "fp16", "--json").json()["precision"]
    assert (explicit["resolved"], explicit["reason"]) == ("fp16", "as configured")


def test_info_shows_the_onnx_exports_precision(cli: Callable[..., Run], tmp_path: Path) -> None:
    from perceptra_seg.backends.onnx_manifest import GRAPH_NAMES, GraphInfo, OnnxManifest, write_manifest

    directory = tmp_path / "export"
    directory.mkdir()
    graphs = {}
    for name, file in GRAPH_NAMES.items():
        (directory / file).write_bytes(b"graph")
        graphs[name] = GraphInfo(file, None, 5, "fp16" if name == "encoder" else "fp32", (), ())
    write_manifest(directory, OnnxManifest("sam_v1", "vit_b", "sam1", "0" * 16, 17, "fp16", "", graphs))
    config = tmp_path / "onnx.yaml"
    config.write_text(yaml.safe_dump({"runtime": {"backend": "onnx"}, "onnx": {"model_dir": str(directory)}}))
    found = cli("info", "-c", config, "--json").json()["precision"]
    assert (found["requested"], found["resolved"]) == ("auto", "fp16") and str(directory) in found["reason"]
    assert cli("info", "-c", config, "--json", "--precision", "fp32").json()["precision"]["resolved"] == "fp32"
    assert cli("info", "--backend", "onnx", "--json").json()["precision"]["resolved"] == "fp32"  # nothing exported


def test_info_finds_an_onnx_export_in_the_cache(cli: Callable[..., Run], tmp_path: Path) -> None:
    """Without onnx.model_dir the backend's ``auto`` takes the first export of the cached checkpoint it finds (fp32,
    fp16, INT8); info used to say fp32 whatever was there."""
    from perceptra_seg.backends.onnx_manifest import (
        GRAPH_NAMES,
        GraphInfo,
        OnnxManifest,
        default_onnx_dir,
        write_manifest,
    )
    from perceptra_seg.registry import get_model_spec
    from perceptra_seg.weights import file_fingerprint

    spec = get_model_spec("sam_v1", "vit_b")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / spec.filename).write_bytes(b"a cached checkpoint")
    fingerprint = file_fingerprint(cache / spec.filename)
    directory = default_onnx_dir(str(cache), spec.name, spec.variant, "fp16", fingerprint)
    directory.mkdir(parents=True)
    graphs = {name: GraphInfo(file, None, 5, "fp32", (), ()) for name, file in GRAPH_NAMES.items()}
    write_manifest(directory, OnnxManifest("sam_v1", "vit_b", "sam1", fingerprint, 17, "fp16", "", graphs))
    config = tmp_path / "onnx.yaml"
    config.write_text(
        yaml.safe_dump(
            {"model": {"name": "sam_v1", "variant": "vit_b", "cache_dir": str(cache)}, "runtime": {"backend": "onnx"}}
        )
    )
    found = cli("info", "-c", config, "--json").json()["precision"]
    assert (found["requested"], found["resolved"]) == ("auto", "fp16"), found


def test_info_shows_the_openvino_backend_and_its_precision(
    cli: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ("info", "--backend", "openvino", "--model", "sam_v2", "--variant", "hiera_small", "--json")
    pretend_cpu(monkeypatch, AVX2_ONLY)
    report = cli(*args).json()
    assert report["backends"]["openvino"]["available"] is (importlib.util.find_spec("openvino") is not None)
    assert report["precision"]["resolved"] == "fp32" and "without native bf16" in report["precision"]["reason"]
    pretend_cpu(monkeypatch, AVX512_BF16)
    chosen = cli(*args).json()["precision"]
    assert chosen["resolved"] == "bf16" and "worst prompt 0.976" in chosen["reason"]
    explicit = cli(*args, "--precision", "fp32").json()["precision"]
    assert (explicit["resolved"], explicit["reason"]) == ("fp32", "as configured")
