"""Checkpoint resolution, download (local HTTP server on 127.0.0.1), verification and loading errors."""

from __future__ import annotations

import hashlib
import http.server
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from perceptra_seg import ModelLoadError, Segmentor
from perceptra_seg.registry import get_model_spec
from perceptra_seg.weights import download_checkpoint, download_progress, resolve_checkpoint
from tests.umask import umask


class _Files(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    requests: ClassVar[list[str]] = []
    lie_about_length: ClassVar[bool] = False

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        body = self.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) + (100 if self.lie_about_length else 0)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Files]]]:
    handler = type("Handler", (_Files,), {"files": {}, "requests": [], "lie_about_length": False})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_hash_prefix_and_renames_atomically(tmp_path: Path, server: Any) -> None:
    base, handler = server
    body = b"checkpoint bytes" * 1000
    prefix = hashlib.sha256(body).hexdigest()[:6]
    handler.files["good.pth"] = body
    target = tmp_path / "cache" / "good.pth"
    download_checkpoint(f"{base}/good.pth", target, sha256_prefix=prefix, timeout_s=5)
    assert target.read_bytes() == body
    assert [p.name for p in target.parent.iterdir()] == ["good.pth"]  # no temporary file left behind


def test_corrupted_download_is_rejected_and_leaves_nothing(tmp_path: Path, server: Any) -> None:
    base, handler = server
    handler.files["bad.pth"] = b"not the real file"
    target = tmp_path / "bad.pth"
    with pytest.raises(ModelLoadError, match="corrupted: sha256"):
        download_checkpoint(f"{base}/bad.pth", target, sha256_prefix="000000", timeout_s=5)
    assert list(tmp_path.iterdir()) == []


def test_truncated_and_missing_downloads(tmp_path: Path, server: Any) -> None:
    base, handler = server
    handler.files["short.pth"] = b"x" * 50
    handler.lie_about_length = True
    with pytest.raises(ModelLoadError, match="truncated|failed"):
        download_checkpoint(f"{base}/short.pth", tmp_path / "short.pth", sha256_prefix=None, timeout_s=5)
    with pytest.raises(ModelLoadError, match="HTTP 404"):
        download_checkpoint(f"{base}/absent.pth", tmp_path / "absent.pth", sha256_prefix=None, timeout_s=5)
    assert list(tmp_path.iterdir()) == []


def test_null_checkpoint_downloads_meta_file_once_into_cache(
    tmp_path: Path, server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: Segmentor with no checkpoint fetches Meta's file name from the mirror, then reuses the cache."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    base, handler = server
    spec = get_model_spec("sam_v2", "hiera_tiny")  # SAM 2 names carry no hash: length and loadability are checked
    handler.files[spec.filename] = _sam2_like_checkpoint(tmp_path / "src.pt")
    source = resolve_checkpoint(spec, None, cache_dir=tmp_path, download_base_url=base, timeout_s=5)
    assert Path(source.location) == tmp_path / spec.filename and source.kind == "meta"
    again = resolve_checkpoint(spec, None, cache_dir=tmp_path, download_base_url=base, timeout_s=5)
    assert again == source and handler.requests == [f"/{spec.filename}"]


def test_offline_without_cached_file_says_where_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = get_model_spec("sam_v1", "vit_b")
    with pytest.raises(ModelLoadError, match=f"put sam_vit_b_01ec64.pth at {tmp_path}"):
        resolve_checkpoint(spec, None, cache_dir=tmp_path)


def test_checkpoint_path_forms(tmp_path: Path) -> None:
    spec = get_model_spec("sam_v1", "vit_b")
    assert resolve_checkpoint(spec, "facebook/sam-vit-base").kind == "hub"
    with pytest.raises(ModelLoadError, match="checkpoint not found"):
        resolve_checkpoint(spec, str(tmp_path / "missing.pth"))
    with pytest.raises(ModelLoadError, match="not a transformers model"):
        resolve_checkpoint(spec, tmp_path)


def test_truncated_checkpoint_is_a_model_load_error(tmp_path: Path, small_sam1: tuple[torch.nn.Module, Path]) -> None:
    data = small_sam1[1].read_bytes()
    truncated = tmp_path / "sam_vit_b_01ec64.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated or not a SAM checkpoint"):
        Segmentor(model="sam_v1", device="cpu", checkpoint_path=truncated)


def test_wrong_family_and_wrong_architecture_name_the_problem(
    tmp_path: Path, small_sam1: tuple[torch.nn.Module, Path]
) -> None:
    with pytest.raises(ModelLoadError, match="holds a SAM1 model but model 'sam_v2' is a SAM2 model"):
        Segmentor(model="sam_v2", device="cpu", checkpoint_path=small_sam1[1])
    # the reduced encoder does not fit vit_b: strict loading names the offending keys
    with pytest.raises(ModelLoadError, match="does not fit sam_v1/vit_b: .*vision_encoder"):
        Segmentor(model="sam_v1", device="cpu", checkpoint_path=small_sam1[1])
    state = torch.load(small_sam1[1], weights_only=True)
    state["mask_decoder.extra.weight"] = torch.zeros(1)
    extra = tmp_path / "extra.pth"
    torch.save(state, extra)
    config = {
        "model": {
            "name": "sam_v1",
            "checkpoint_path": str(extra),
            "architecture": {
                "vision_config": {
                    "hidden_size": 64,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 2,
                    "global_attn_indexes": [1],
                }
            },
        },
        "runtime": {"device": "cpu"},
    }
    with pytest.raises(ModelLoadError, match="mask_decoder.extra.weight"):
        Segmentor(config)


def test_explicit_cuda_without_cuda_is_an_error(small_sam1_config: dict[str, Any]) -> None:
    from perceptra_seg import ConfigError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = {**small_sam1_config, "runtime": {"device": "cuda"}}
    with pytest.raises(ConfigError, match="CUDA is not available"):
        Segmentor(config)


# --- download verification, corrupt cache entries, permissions, progress --------------------------------------


def _sam2_like_checkpoint(path: Path) -> bytes:
    """A small file laid out like Meta's SAM 2 checkpoints (``{"model": state_dict}``, zip format)."""
    generator = torch.Generator().manual_seed(0)
    state = {
        "image_encoder.trunk.patch_embed.proj.weight": torch.randn(64, 3, 7, 7, generator=generator),
        "sam_mask_decoder.iou_token.weight": torch.randn(1, 256, generator=generator),
    }
    torch.save({"model": state}, path)
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "sam1 file"])
def test_unusable_download_without_hash_never_lands_in_the_cache(
    tmp_path: Path, server: Any, small_sam1: tuple[torch.nn.Module, Path], monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    """A SAM 2 name has no hash: a truncated or corrupt body with an honest Content-Length was cached before."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    base, handler = server
    spec = get_model_spec("sam_v2", "hiera_tiny")
    good = _sam2_like_checkpoint(tmp_path / "src.pt")
    if damage == "truncated":
        body = good[: len(good) * 2 // 3]
    elif damage == "flipped byte":
        position = good.index(b"data/0") + 200  # inside the first tensor's bytes
        body = good[:position] + bytes([good[position] ^ 0xFF]) + good[position + 1 :]
    else:
        body = small_sam1[1].read_bytes()
    handler.files[spec.filename] = body
    cache = tmp_path / "cache"
    with pytest.raises(ModelLoadError, match="is not a usable checkpoint .*nothing was cached"):
        resolve_checkpoint(spec, None, cache_dir=cache, download_base_url=base, timeout_s=5)
    assert list(cache.iterdir()) == []


def test_corrupt_cached_checkpoint_names_the_file_to_delete(tmp_path: Path, small_sam1_config: dict[str, Any]) -> None:
    spec = get_model_spec("sam_v2", "hiera_tiny")
    good = _sam2_like_checkpoint(tmp_path / "src.pt")
    cached = tmp_path / "cache" / spec.filename
    cached.parent.mkdir()
    cached.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelLoadError, match=f"cached checkpoint {cached} is unusable .*delete that file.*--force"):
        resolve_checkpoint(spec, None, cache_dir=cached.parent, offline=True)
    config = {
        "model": {"name": "sam_v2", "variant": "hiera_tiny", "cache_dir": str(cached.parent), "offline": True},
        "runtime": {"device": "cpu"},
    }
    with pytest.raises(ModelLoadError, match=f"{cached}.*segmentor-cli download --model sam_v2 --variant hiera_tiny"):
        Segmentor(config)
    cached.write_bytes(good)  # the repaired file is accepted
    assert resolve_checkpoint(spec, None, cache_dir=cached.parent, offline=True).location == str(cached)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_downloaded_checkpoint_honours_theumask(tmp_path: Path, server: Any, mask: int, mode: int) -> None:
    base, handler = server
    handler.files["sam2.1_hiera_tiny.pt"] = _sam2_like_checkpoint(tmp_path / "src.pt")
    target = tmp_path / "cache" / "sam2.1_hiera_tiny.pt"
    with umask(mask):
        download_checkpoint(f"{base}/sam2.1_hiera_tiny.pt", target, sha256_prefix=None, timeout_s=5, family="sam2")
    assert stat.S_IMODE(target.stat().st_mode) == mode


def test_download_reports_progress_to_the_installed_callback(tmp_path: Path, server: Any) -> None:
    base, handler = server
    body = b"x" * (3 * 1024 * 1024 + 5)
    handler.files["big.pth"] = body
    calls: list[tuple[str, int, int | None]] = []
    with download_progress(lambda name, done, total: calls.append((name, done, total))):
        prefix = hashlib.sha256(body).hexdigest()[:8]
        download_checkpoint(f"{base}/big.pth", tmp_path / "big.pth", sha256_prefix=prefix, timeout_s=5)
    assert calls[0] == ("big.pth", 0, len(body)) and calls[-1] == ("big.pth", len(body), len(body))
    assert [done for _, done, _ in calls] == sorted(done for _, done, _ in calls) and len(calls) >= 3
    calls.clear()
    download_checkpoint(f"{base}/big.pth", tmp_path / "again.pth", sha256_prefix=prefix, timeout_s=5)
    assert calls == []  # outside the context nothing is reported
