"""Image input: every source kind, every Pillow mode, EXIF orientation, limits, corrupt data and URL fetching."""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import struct
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, features

from perceptra_seg.exceptions import ImageTooLargeError, InvalidInputError
from perceptra_seg.utils.image_io import (
    ALLOWED_FORMATS,
    decode_image_bytes,
    fetch_url,
    image_digest,
    load_image,
    pil_to_rgb_array,
)
from tests.trickle import TrickleServer

RNG = np.random.default_rng(1234)
PICTURE = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)  # asymmetric: H != W


def _encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _png_bytes(array: np.ndarray = PICTURE) -> bytes:
    return _encode(Image.fromarray(array), "PNG")


def _check_canonical(out: np.ndarray, height: int, width: int) -> None:
    assert out.dtype == np.uint8
    assert out.shape == (height, width, 3)
    assert out.flags.c_contiguous


# ---------------------------------------------------------------------------------------------- numpy arrays


def _gray3(values: list[int]) -> np.ndarray:
    return np.repeat(np.asarray(values, dtype=np.uint8).reshape(1, -1, 1), 3, axis=2)


@pytest.mark.parametrize(
    "array,expected",
    [
        (np.array([[0, 7, 255]], np.uint8), _gray3([0, 7, 255])),
        (np.array([[[0], [7], [255]]], np.uint8), _gray3([0, 7, 255])),
        (np.array([[[1, 2, 3]]], np.uint8), np.array([[[1, 2, 3]]], np.uint8)),
        (np.array([[[1, 2, 3, 0]]], np.uint8), np.array([[[1, 2, 3]]], np.uint8)),  # alpha dropped
        (np.array([[False, True]]), _gray3([0, 255])),
        (np.array([[0, 128, 129, 257, 385, 386, 65535]], np.uint16), _gray3([0, 0, 1, 1, 1, 2, 255])),
        (np.array([[0.0, 0.5, 1.0, 0.2]], np.float32), _gray3([0, 128, 255, 51])),
        (np.array([[[0.0, 0.25, 1.0]]], np.float64), np.array([[[0, 64, 255]]], np.uint8)),
        (np.array([[[0, 65535, 257, 9]]], np.dtype(">u2")), np.array([[[0, 255, 1]]], np.uint8)),
    ],
    ids=["gray", "gray1", "rgb", "rgba", "bool", "uint16", "float32", "float64", "uint16_be_rgba"],
)
def test_array_inputs(array: np.ndarray, expected: np.ndarray) -> None:
    out = load_image(array)
    _check_canonical(out, *array.shape[:2])
    np.testing.assert_array_equal(out, expected)


def test_uint16_rule_is_value_over_257_rounded() -> None:
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    out = load_image(values)[:, :, 0]
    np.testing.assert_array_equal(out, np.floor(values / 257.0 + 0.5).astype(np.uint8))


def test_non_contiguous_array_becomes_contiguous() -> None:
    big = RNG.integers(0, 256, size=(6, 10, 3), dtype=np.uint8)
    out = load_image(big[:, ::2])
    _check_canonical(out, 6, 5)
    np.testing.assert_array_equal(out, big[:, ::2])


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((4, 4), np.int32),
        np.zeros((4, 4), np.int8),
        np.zeros((4, 4), np.complex64),
        np.zeros((4, 4), object),
        np.zeros(16, np.uint8),
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((4, 4, 5), np.uint8),
        np.zeros((2, 4, 4, 3), np.uint8),
        np.zeros((0, 4, 3), np.uint8),
        np.array([[0.0, 1.5]]),
        np.array([[-0.1, 0.5]]),
        np.array([[np.nan, 0.5]]),
        np.array([[np.inf, 0.5]]),
    ],
    ids=["int32", "int8", "complex", "object", "1d", "2ch", "5ch", "4d", "empty", "f>1", "f<0", "nan", "inf"],
)
def test_bad_arrays_rejected(array: np.ndarray) -> None:
    with pytest.raises(InvalidInputError):
        load_image(array)


def test_array_pixel_limit() -> None:
    with pytest.raises(ImageTooLargeError):
        load_image(np.zeros((10, 11), np.uint8), max_pixels=100)


@pytest.mark.parametrize("source", [42, 3.5, None, [1, 2, 3], {"a": 1}])
def test_unsupported_source_types(source: object) -> None:
    with pytest.raises(InvalidInputError, match="unsupported image source"):
        load_image(source)


# ------------------------------------------------------------------------------------------------ Pillow modes


def _palette_image(transparent: bool) -> Image.Image:
    img = Image.new("P", (3, 1))
    img.putpalette([10, 20, 30, 200, 100, 50, 0, 255, 0] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2])
    if transparent:
        img.info["transparency"] = 1
    return img


def _mode_image(mode: str, values: list) -> Image.Image:
    img = Image.new(mode, (len(values), 1))
    img.putdata(values)
    return img


MODE_CASES = [
    ("1", _mode_image("1", [0, 255]), [[0] * 3, [255] * 3]),
    ("L", _mode_image("L", [0, 9, 255]), [[0] * 3, [9] * 3, [255] * 3]),
    ("P", _palette_image(False), [[10, 20, 30], [200, 100, 50], [0, 255, 0]]),
    ("P_transparency", _palette_image(True), [[10, 20, 30], [200, 100, 50], [0, 255, 0]]),
    ("LA", _mode_image("LA", [(9, 0), (200, 255)]), [[9] * 3, [200] * 3]),
    ("RGB", _mode_image("RGB", [(1, 2, 3), (250, 0, 9)]), [[1, 2, 3], [250, 0, 9]]),
    ("RGBA", _mode_image("RGBA", [(1, 2, 3, 0), (250, 0, 9, 255)]), [[1, 2, 3], [250, 0, 9]]),
    ("CMYK", _mode_image("CMYK", [(0, 0, 0, 0), (255, 0, 0, 0)]), [[255, 255, 255], [0, 255, 255]]),
    ("I;16", _mode_image("I;16", [0, 257, 300, 65535]), [[0] * 3, [1] * 3, [1] * 3, [255] * 3]),
    ("I", _mode_image("I", [-5, 0, 514, 65535, 70000]), [[0] * 3, [0] * 3, [2] * 3, [255] * 3, [255] * 3]),
    ("F_unit", _mode_image("F", [0.0, 0.5, 1.0]), [[0] * 3, [128] * 3, [255] * 3]),
    ("F_255", _mode_image("F", [-3.0, 100.4, 300.0]), [[0] * 3, [100] * 3, [255] * 3]),
    ("F_nan", _mode_image("F", [float("nan"), 0.2]), [[0] * 3, [51] * 3]),
]


@pytest.mark.parametrize("img,expected", [(c[1], c[2]) for c in MODE_CASES], ids=[c[0] for c in MODE_CASES])
def test_pillow_modes(img: Image.Image, expected: list) -> None:
    for out in (pil_to_rgb_array(img), load_image(img)):
        _check_canonical(out, 1, len(expected))
        np.testing.assert_array_equal(out, np.asarray([expected], dtype=np.uint8))


def test_pil_pixel_limit() -> None:
    with pytest.raises(ImageTooLargeError):
        load_image(Image.new("RGB", (20, 20)), max_pixels=399)


def test_sixteen_bit_png_file_uses_the_257_rule() -> None:
    values = np.array([[0, 257, 1000, 65535]], dtype=np.uint16)
    data = _encode(Image.fromarray(values), "PNG")
    np.testing.assert_array_equal(load_image(data)[0, :, 0], [0, 1, 4, 255])


@pytest.mark.parametrize(
    "fmt,kwargs",
    [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {"lossless": True})],
)
def test_lossless_formats_decode_exactly(fmt: str, kwargs: dict) -> None:
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    out = decode_image_bytes(_encode(Image.fromarray(PICTURE), fmt, **kwargs), max_pixels=1000)
    np.testing.assert_array_equal(out, PICTURE)


def test_jpeg_decodes_close_to_source() -> None:
    smooth = np.zeros((32, 48, 3), np.uint8)
    smooth[:, :24] = (200, 40, 40)
    smooth[:, 24:] = (30, 90, 220)
    out = load_image(_encode(Image.fromarray(smooth), "JPEG", quality=95))
    _check_canonical(out, 32, 48)
    assert np.abs(out.astype(int) - smooth).mean() < 3


def test_multi_frame_tiff_returns_first_frame() -> None:
    first, second = Image.fromarray(PICTURE), Image.fromarray(255 - PICTURE)
    data = _encode(first, "TIFF", save_all=True, append_images=[second])
    np.testing.assert_array_equal(load_image(data), PICTURE)


# ------------------------------------------------------------------------------------------ EXIF orientation

# Expected upright picture for each EXIF orientation value, written from the EXIF definition of the tag
# (where the stored 0th row / 0th column go on display), not from Pillow's implementation.
EXIF_EXPECTED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # 0th row = left side, 0th column = top
    6: lambda a: np.rot90(a, k=-1),  # 0th row = right side: rotate 90 clockwise to view
    7: lambda a: np.rot90(a, k=2).transpose(1, 0, 2),  # 0th row = right side, 0th column = bottom
    8: lambda a: np.rot90(a, k=1),  # 0th row = left side: rotate 90 counter-clockwise to view
}


def _with_orientation(array: np.ndarray, fmt: str, orientation: int, **kwargs: object) -> bytes:
    img = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(img, fmt, exif=exif.tobytes(), **kwargs)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_png(orientation: int) -> None:
    out = load_image(_with_orientation(PICTURE, "PNG", orientation))
    expected = EXIF_EXPECTED[orientation](PICTURE)
    _check_canonical(out, *expected.shape[:2])
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_jpeg(orientation: int) -> None:
    blocks = np.zeros((32, 48, 3), np.uint8)  # four flat quadrants in different colours: JPEG-friendly, asymmetric
    blocks[:16, :24] = (250, 10, 10)
    blocks[:16, 24:] = (10, 250, 10)
    blocks[16:, :24] = (10, 10, 250)
    blocks[16:, 24:] = (240, 240, 20)
    out = load_image(_with_orientation(blocks, "JPEG", orientation, quality=95))
    expected = EXIF_EXPECTED[orientation](blocks)
    assert out.shape == expected.shape
    errors = {
        k: np.abs(out.astype(int) - view(blocks).astype(int)).mean()
        for k, view in EXIF_EXPECTED.items()
        if view(blocks).shape == out.shape and not np.array_equal(view(blocks), expected)
    }
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 8  # JPEG error only
    assert min(errors.values()) > 50  # every other orientation is far off


# ----------------------------------------------------------------------------------------- bad / hostile data


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _bomb_png(side: int, bit_depth: int = 1) -> bytes:
    """A complete, valid grey PNG of ``side x side`` pixels, all zero, compressed to a few tens of KB."""
    row = bytes(1 + (side * bit_depth + 7) // 8)  # filter byte + packed zero pixels
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, bit_depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "side,bit_depth,max_pixels",
    [(20_000, 1, 100_000_000), (5_000, 8, 1_000_000)],
    ids=["pillow_bomb_limit", "own_pixel_limit"],
)
def test_decompression_bomb_rejected_cheaply(side: int, bit_depth: int, max_pixels: int) -> None:
    data = _bomb_png(side, bit_depth)
    assert len(data) < 400_000
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ImageTooLargeError):
            load_image(data, max_pixels=max_pixels)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 50 * 1024 * 1024


def test_bomb_png_is_otherwise_valid() -> None:
    img = load_image(_bomb_png(64))
    assert img.shape == (64, 64, 3) and not img.any()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_images_rejected(fmt: str) -> None:
    noisy = RNG.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(noisy), fmt)
    with pytest.raises(InvalidInputError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


@pytest.mark.parametrize("data", [b"hello, world", b"", b"\x89PNG\r\n\x1a\n garbage"])
def test_non_image_bytes_rejected(data: bytes) -> None:
    with pytest.raises(InvalidInputError):
        load_image(data)


@pytest.mark.parametrize("fmt", ["GIF", "ICO"])
def test_formats_outside_allow_list_are_named(fmt: str) -> None:
    assert fmt not in ALLOWED_FORMATS
    data = _encode(Image.fromarray(PICTURE), fmt)
    with pytest.raises(InvalidInputError, match=f"unsupported image format {fmt}"):
        load_image(data)


def test_byte_limit_on_raw_bytes() -> None:
    data = _png_bytes()
    with pytest.raises(ImageTooLargeError):
        load_image(data, max_bytes=len(data) - 1)
    assert load_image(data, max_bytes=len(data)).shape == (5, 7, 3)


# ------------------------------------------------------------------------------------------- base64 strings


def test_base64_variants() -> None:
    data = _png_bytes()
    plain = base64.b64encode(data).decode()
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    wrapped = "\n".join(plain[i : i + 76] for i in range(0, len(plain), 76))
    for text in (plain, f"data:image/png;base64,{plain}", f"DATA:image/png;BASE64,{wrapped}", urlsafe, wrapped):
        np.testing.assert_array_equal(load_image(text), PICTURE)


@pytest.mark.parametrize(
    "text,match",
    [
        ("!!!not base64!!!", "not valid base64"),
        ("data:image/png;base64,***", "invalid base64"),
        ("data:image/png,rawdata", "data: URI"),
        ("data:image/png;base64,", "empty base64"),
        (base64.b64encode(b"plain text, not an image").decode(), "not a recognised image"),
        ("/no/such/dir/picture.png", "no file exists"),
    ],
)
def test_bad_strings(text: str, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        load_image(text)


def test_base64_size_checked_before_decoding() -> None:
    text = "A" * 4_000_000  # would decode to 3 MB
    with pytest.raises(ImageTooLargeError):
        load_image(text, max_bytes=1_000_000)
    with pytest.raises(ImageTooLargeError):
        load_image("data:image/png;base64," + text, max_bytes=1_000_000)


# ---------------------------------------------------------------------------------------------------- paths


def test_path_inputs(tmp_path: Path) -> None:
    path = tmp_path / "picture.png"
    path.write_bytes(_png_bytes())
    for source in (path, str(path)):
        np.testing.assert_array_equal(load_image(source), PICTURE)
    with pytest.raises(InvalidInputError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageTooLargeError):
        load_image(path, max_pixels=34)


# ---------------------------------------------------------------------------------------------------- digest


def test_image_digest() -> None:
    base = RNG.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    digest = image_digest(base)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert image_digest(base.copy()) == digest
    wide = np.zeros((4, 12, 3), np.uint8)
    wide[:, ::2] = base
    assert image_digest(wide[:, ::2]) == digest  # a strided view hashes like its contiguous copy
    changed = base.copy()
    changed[0, 0, 0] ^= 1
    assert image_digest(changed) != digest
    assert image_digest(base.reshape(6, 4, 3)) != digest  # same bytes, other shape
    assert image_digest(base.view(np.int8)) != digest  # same bytes, other dtype


# ------------------------------------------------------------------------------------------------------ URLs


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client may hang up on purpose
            self._route()

    def _route(self) -> None:
        if self.path == "/img.png":
            body = _png_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/declared-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            self.wfile.write(b"x" * 1024)
        elif self.path == "/undeclared-huge":
            self.send_response(200)
            self.end_headers()  # HTTP/1.0, no Content-Length: body ends when the connection closes
            for _ in range(64):
                self.wfile.write(b"x" * 8192)
                self.wfile.flush()
        elif self.path == "/slow":
            time.sleep(1.5)
            self.send_response(200)
            self.end_headers()
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/img.png")
            self.end_headers()
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_urls_disabled_by_default() -> None:
    with pytest.raises(InvalidInputError, match="disabled"):
        load_image("https://example.com/cat.png")


def test_url_success(http_base: str) -> None:
    out = load_image(f"{http_base}/img.png", allow_urls=True, url_timeout_s=5.0)
    np.testing.assert_array_equal(out, PICTURE)
    assert fetch_url(f"{http_base}/img.png", timeout_s=5.0, max_bytes=10_000) == _png_bytes()


@pytest.mark.parametrize("path", ["/declared-huge", "/undeclared-huge"])
def test_url_byte_cap(http_base: str, path: str) -> None:
    with pytest.raises(ImageTooLargeError):
        fetch_url(f"{http_base}{path}", timeout_s=5.0, max_bytes=50_000)
    with pytest.raises(ImageTooLargeError):
        load_image(f"{http_base}{path}", allow_urls=True, max_bytes=50_000)


def test_url_http_errors(http_base: str) -> None:
    with pytest.raises(InvalidInputError, match="HTTP 404"):
        fetch_url(f"{http_base}/missing", timeout_s=5.0, max_bytes=10_000)
    with pytest.raises(InvalidInputError, match="redirects are not followed"):
        load_image(f"{http_base}/redirect", allow_urls=True)


def test_url_timeout(http_base: str) -> None:
    start = time.perf_counter()
    with pytest.raises(InvalidInputError, match="timed out"):
        load_image(f"{http_base}/slow", allow_urls=True, url_timeout_s=0.3)
    assert time.perf_counter() - start < 1.4


def test_url_deadline_ends_a_trickling_header() -> None:
    """``timeout_s`` bounds the whole download: a server that sends one header byte every 0.2 s (so no single read
    ever times out) was read for as long as it kept trickling; now the socket is shut down at the deadline."""
    with TrickleServer(interval_s=0.2, total_s=20.0) as trickle:
        start = time.monotonic()
        with pytest.raises(InvalidInputError, match="timed out"):
            fetch_url(trickle.url, timeout_s=1.0, max_bytes=100_000)
        elapsed = time.monotonic() - start
    assert elapsed < 1.0 + 3.0, elapsed


def test_url_connection_refused() -> None:
    with socket.socket() as sock:  # reserve a loopback port, then close it: connecting is refused
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with pytest.raises(InvalidInputError, match="could not fetch"):
        fetch_url(f"http://127.0.0.1:{port}/x.png", timeout_s=2.0, max_bytes=1000)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x.png", "file:///etc/passwd", "http:///nohost"])
def test_fetch_refuses_other_schemes(url: str) -> None:
    with pytest.raises(InvalidInputError, match="http"):
        fetch_url(url, timeout_s=1.0, max_bytes=1000)


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://[", "http://[127.0.0.1]/", "http://]/", "http://a]b/", "http://a:99999/"]
)
def test_malformed_urls_are_invalid_input_through_the_sdk(url: str) -> None:
    """The SDK's own URL path (``allow_urls=True``) refuses what urlsplit or httpx cannot parse, never ValueError."""
    with pytest.raises(InvalidInputError, match="invalid image URL"):
        load_image(url, allow_urls=True, url_timeout_s=1.0)


def test_injected_client_is_used() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, content=_png_bytes())

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        out = load_image("https://images.example/cat.png", allow_urls=True, http_client=client)
        assert not client.is_closed  # a caller's client is left open
    np.testing.assert_array_equal(out, PICTURE)
    assert seen == ["https://images.example/cat.png"]
