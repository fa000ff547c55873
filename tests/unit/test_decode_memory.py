"""Decode memory is bounded in bytes (issue 15, "memory spikes inside the pixel limit").

Peak memory is measured honestly: the decode runs in a fresh Python process, which resets its peak-RSS counter
(``/proc/self/clear_refs``) just before decoding and reads ``VmHWM`` (the kernel's peak resident set) after, so every
allocation counts — numpy's, Pillow's and the decoders' C buffers alike.

Before the fix, 16-megapixel images peaked at about 36 (float32 TIFF), 29 (int32 TIFF) and 21 (16-bit PNG) bytes a
pixel above the process's size (whole-image int64/float64 copies); the decode now holds Pillow's image, the RGB
result and one block of rows.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perceptra_seg import Segmentor, SegmentorConfig
from perceptra_seg.exceptions import ImageTooLargeError
from perceptra_seg.utils.image_decode import decode_memory_estimate
from perceptra_seg.utils.image_io import load_image

from ..conftest import BoxOracleBackend

SIDE = 4000  # 16 megapixels: large enough that the block overhead is small next to the image

_MEASURE = """
import json, sys
from pathlib import Path
from perceptra_seg.utils.image_io import load_image

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no " + key)

data = Path(sys.argv[1]).read_bytes()
Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
before = status("VmRSS")
image = load_image(data)
peak = status("VmHWM")
print(json.dumps({"peak": peak - before, "shape": list(image.shape), "corner": image[0, 0].tolist(),
                  "patch": image[150, 150].tolist()}))
"""


def _clear_refs_works() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _save(array: np.ndarray, path: Path, fmt: str, **kwargs: object) -> Path:
    Image.fromarray(array).save(path, format=fmt, **kwargs)
    return path


def _kinds(tmp: Path) -> dict[str, tuple[Path, int]]:
    """The three reported kinds and a WebP (whose decoder holds whole frames) at :data:`SIDE`² (mostly zero, a patch
    at [100:200, 100:300]) and the patch's expected 8-bit value under the documented rules."""
    f = np.zeros((SIDE, SIDE), np.float32)
    f[100:200, 100:300] = 0.75  # [0, 1] data: round(0.75 * 255) = 191
    i = np.zeros((SIDE, SIDE), np.int32)
    i[100:200, 100:300] = 40000  # round(40000 / 257) = 156
    u = np.zeros((SIDE, SIDE), np.uint16)
    u[100:200, 100:300] = 40000
    rgb = np.zeros((SIDE, SIDE, 3), np.uint8)
    rgb[100:200, 100:300] = 200
    return {
        "float32-tiff": (_save(f, tmp / "f.tif", "TIFF", compression="tiff_adobe_deflate"), 191),
        "int32-tiff": (_save(i, tmp / "i.tif", "TIFF", compression="tiff_adobe_deflate"), 156),
        "uint16-png": (_save(u, tmp / "u.png", "PNG"), 156),
        "rgb-webp": (_save(rgb, tmp / "rgb.webp", "WEBP", lossless=True), 200),
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int]]:
    return _kinds(tmp_path_factory.mktemp("decode_memory"))


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _clear_refs_works(), reason="needs Linux VmHWM reset")
@pytest.mark.parametrize("kind", ["float32-tiff", "int32-tiff", "uint16-png", "rgb-webp"])
def test_decode_peak_memory_stays_near_the_result(images: dict[str, tuple[Path, int]], kind: str) -> None:
    """Peak memory of the decode ≤ its header estimate ≤ Pillow's image + decoder buffer + RGB result + 65 MiB,
    and the pixels follow the documented scaling rules."""
    path, patch_value = images[kind]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["shape"] == [SIDE, SIDE, 3]
    assert report["corner"] == [0, 0, 0] and report["patch"] == [patch_value] * 3
    with Image.open(path) as img:
        estimate = decode_memory_estimate(img)
        pillow_bytes = SIDE * SIDE * (2 if img.mode.startswith("I;16") else 4)
        decoder_bytes = SIDE * SIDE * 8 if img.format == "WEBP" else 2**20  # two RGBA frames; a TIFF strip
    result_bytes = SIDE * SIDE * 3
    assert estimate <= pillow_bytes + decoder_bytes + result_bytes + 64 * 2**20
    assert report["peak"] <= estimate, (report["peak"], estimate)
    if kind != "rgb-webp":  # before: 36 / 29 / 21 bytes a pixel (604 / 476 / 338 MB here)
        assert report["peak"] < 12 * SIDE * SIDE


def _float_tiff_header(width: int, height: int) -> bytes:
    """A little-endian float32 TIFF whose strip (one, of the whole image) is missing: only the header is valid."""
    entries = [  # tag, type (3 SHORT, 4 LONG), value
        (256, 4, width), (257, 4, height), (258, 3, 32), (259, 3, 1), (262, 3, 1), (273, 4, 8 + 2 + 11 * 12 + 4),
        (277, 3, 1), (278, 4, height), (279, 4, width * height * 4), (284, 3, 1), (339, 3, 3),
    ]  # fmt: skip
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        field = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + field
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\x00" * 64


def test_over_the_byte_limit_is_refused_from_the_header() -> None:
    """A 100-megapixel single-strip float32 TIFF (within the pixel limit) needs Pillow's image, a whole-image strip
    buffer and the RGB result: over the 1 GiB default. Only its header exists, so a refusal proves that the check
    comes before decoding (decoding would fail on the missing strip: InvalidInputError)."""
    data = _float_tiff_header(10_000, 10_000)
    with Image.open(io.BytesIO(data)) as img:
        assert (img.mode, img.size) == ("F", (10_000, 10_000))
        estimate = decode_memory_estimate(img)
    assert estimate == 10**8 * (4 + 4 + 3) + 64 * 2**20
    with pytest.raises(ImageTooLargeError, match=rf"needs about {estimate} bytes.*max_decode_bytes limit of {2**30}"):
        load_image(data)
    with pytest.raises(ImageTooLargeError, match="max_decode_bytes"):
        load_image(data, max_decode_bytes=estimate - 1)


def test_the_limit_is_inclusive_and_applies_to_every_encoded_source(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    path = _save(rgb, tmp_path / "rgb.png", "PNG")
    with Image.open(path) as img:
        estimate = decode_memory_estimate(img)
    assert estimate == 60 * 80 * (4 + 3) + 64 * 2**20
    data = path.read_bytes()
    np.testing.assert_array_equal(load_image(data, max_decode_bytes=estimate), rgb)
    import base64

    for source in (data, path, str(path), base64.b64encode(data).decode()):
        with pytest.raises(ImageTooLargeError, match=f"limit of {estimate - 1} bytes"):
            load_image(source, max_decode_bytes=estimate - 1)


def test_segmentor_reads_input_max_decode_bytes(tmp_path: Path) -> None:
    """``input.max_decode_bytes`` reaches the decode: the same PNG is refused under a lower limit."""
    path = _save(np.zeros((60, 80, 3), np.uint8), tmp_path / "z.png", "PNG")
    with Image.open(path) as img:
        estimate = decode_memory_estimate(img)
    for limit, refused in ((estimate, False), (estimate - 1, True)):
        config = SegmentorConfig.load(None, input={"max_decode_bytes": limit}, runtime={"device": "cpu"})
        segmentor = Segmentor(config, backend=BoxOracleBackend())
        if refused:
            with pytest.raises(ImageTooLargeError, match=f"max_decode_bytes limit of {limit} bytes"):
                segmentor.segment_from_box(path.read_bytes(), (0, 0, 10, 10))
        else:
            assert segmentor.segment_from_box(path.read_bytes(), (0, 0, 10, 10)).mask.shape == (60, 80)  # type: ignore[union-attr]
