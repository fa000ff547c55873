"""Click → mask latency: the ``/v1/ws`` session against REST refinement (``/v1/segment/points`` with
``return_logits`` / ``mask_input``), in the same run, against the same server process.

For each variant the service runs as a real uvicorn process on 127.0.0.1 (:class:`bench.rest.Server`). The image is
embedded once (``POST /v1/embed``); then the same click sequence is sent both ways, interleaved click by click so
that drift on the machine hits both transports alike:

* WebSocket: one session on that ``image_id``; each click is one ``prompt`` message (the server adds the object's
  earlier clicks and its previous logits), timed from send to the ``mask`` reply.
* REST: each click is one ``POST /v1/segment/points`` with all of the object's clicks so far, the previous answer's
  ``low_res_logits`` as ``mask_input`` and ``return_logits: true`` (a keep-alive connection), timed per request.

Every click's two masks must be identical (the run stops otherwise): both transports run the same refinement.
Objects get ``--clicks-per-object`` clicks each (alternating foreground / background), then a new object starts.

Run: ``python -m bench.clicks --variants demo vit_b hiera_tiny --clicks 40`` (writes ``clicks.json`` and
``clicks.md`` under ``--out``, default ``bench/results/``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from .measure import summarize
from .models import bench_image, ensure_checkpoint, get_variant, segmentor_config
from .rest import Server, embed_image

__all__ = ["click_sequence", "markdown", "measure_variant"]


def click_sequence(
    size: tuple[int, int], count: int, per_object: int, seed: int = 7
) -> list[tuple[int, float, float, int]]:
    """``count`` clicks ``(object, x, y, label)`` inside an image of ``(H, W)``; the first click of every object is
    foreground, later ones alternate background / foreground."""
    rng = np.random.default_rng(seed)
    height, width = size
    out = []
    for index in range(count):
        k, step = divmod(index, per_object)
        label = 1 if step % 2 == 0 else 0
        out.append((k, float(rng.uniform(0, width - 1)), float(rng.uniform(0, height - 1)), label))
    return out


def model_sections(key: str, work_dir: Path) -> dict[str, Any]:
    """Config sections for ``demo`` or one of :data:`bench.models.VARIANTS` (random-weight checkpoint, torch fp32)."""
    if key == "demo":
        return {"model": {"name": "demo"}, "runtime": {"device": "cpu"}}
    variant = get_variant(key)
    return segmentor_config(variant, ensure_checkpoint(variant, work_dir), "torch-fp32", work_dir=work_dir)


def measure_variant(key: str, work_dir: Path, clicks: int, per_object: int) -> dict[str, Any]:
    """Serve ``key``, embed the bench image, send the click sequence over both transports; raw samples + summary."""
    from websockets.sync.client import connect

    image = bench_image()
    sequence = click_sequence(image.shape[:2], clicks, per_object)
    with Server(model_sections(key, work_dir), work_dir / f"clicks_{key}", ready_timeout_s=900.0) as server:
        embedded = embed_image(server.base_url, image)
        image_id = embedded["image_id"]
        ws_url = server.base_url.replace("http://", "ws://") + "/v1/ws"
        ws_ms: list[float] = []
        rest_ms: list[float] = []
        ws_server_ms: list[float] = []
        rest_server_ms: list[float] = []
        points: dict[int, list[dict[str, Any]]] = {}
        logits: dict[int, Any] = {}
        with connect(ws_url, max_size=None) as ws, httpx.Client(base_url=server.base_url, timeout=600.0) as rest:
            ws.send(json.dumps({"type": "image_id", "image_id": image_id}))
            ready = json.loads(ws.recv())
            if ready.get("type") != "ready":
                raise RuntimeError(f"/v1/ws did not accept the image: {ready}")
            for k, x, y, label in sequence:
                click = {"x": x, "y": y, "label": label}
                start = time.perf_counter()
                ws.send(json.dumps({"type": "prompt", "object": k, "points": [click]}))
                reply = json.loads(ws.recv())
                ws_ms.append((time.perf_counter() - start) * 1000.0)
                if reply.get("type") != "mask":
                    raise RuntimeError(f"/v1/ws answered {reply}")
                ws_server_ms.append(float(reply["latency_ms"]))

                points.setdefault(k, []).append(click)
                body: dict[str, Any] = {
                    "image_id": image_id,
                    "points": points[k],
                    "return_logits": True,
                    "output_formats": ["rle"],
                }
                if k in logits:
                    body["mask_input"] = logits[k]
                start = time.perf_counter()
                response = rest.post("/v1/segment/points", json=body)
                rest_ms.append((time.perf_counter() - start) * 1000.0)
                if response.status_code != 200:
                    raise RuntimeError(f"/v1/segment/points answered {response.status_code}: {response.text[:300]}")
                answer = response.json()
                logits[k] = answer["low_res_logits"]
                rest_server_ms.append(float(answer["latency_ms"]))
                if answer["rle"] != reply["rle"]:
                    raise RuntimeError(f"click {len(ws_ms)}: the WebSocket and REST masks differ")
    return {
        "variant": key,
        "image": list(image.shape[:2]),
        "clicks": clicks,
        "clicks_per_object": per_object,
        "samples_ms": {"ws": ws_ms, "rest": rest_ms, "ws_server": ws_server_ms, "rest_server": rest_server_ms},
        "ws": summarize(ws_ms),
        "rest": summarize(rest_ms),
        "ws_server": summarize(ws_server_ms),
        "rest_server": summarize(rest_server_ms),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    """The BENCHMARKS.md table: one line per variant and transport."""
    lines = [
        "| variant | transport | clicks | client p50 ms | client p95 ms | server p50 ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        for transport, server_key, name in (
            ("ws", "ws_server", "WebSocket /v1/ws"),
            ("rest", "rest_server", "REST /v1/segment/points + mask_input"),
        ):
            stats, server = row[transport], row[server_key]
            lines.append(
                f"| {row['variant']} | {name} | {stats['n']} | {stats['median_ms']:.1f} | "
                f"{stats['p95_ms']:.1f} | {server['median_ms']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["demo", "vit_b", "hiera_tiny"])
    parser.add_argument("--clicks", type=int, default=40)
    parser.add_argument("--clicks-per-object", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    work_dir = args.work_dir or args.out / "work"
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [measure_variant(key, work_dir, args.clicks, args.clicks_per_object) for key in args.variants]
    (args.out / "clicks.json").write_text(json.dumps(rows, indent=1))
    table = markdown(rows)
    (args.out / "clicks.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
