"""Results → ``results.json`` (everything) and ``results.md`` (the tables BENCHMARKS.md is written from).

:func:`analyse` derives every table from the raw results document that ``bench.run`` assembles (worker results,
calibration, machine); ``markdown.render_markdown`` formats them; :func:`write_report` writes both files. Nothing here
measures or imports torch, so the report can be rebuilt from a saved ``results.json``:
``python -m bench.report bench/results/results.json``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .markdown import render_markdown

__all__ = ["analyse", "machine_info", "rewrite_from_saved", "write_report", "write_results"]

IMPLEMENTATIONS = {
    ("ours", "torch-fp32"): "ours · torch fp32",
    ("ours", "torch-bf16"): "ours · torch bf16 autocast",
    ("ours", "onnx-fp32"): "ours · ONNX Runtime fp32",
    ("ours", "onnx-int8"): "ours · ONNX Runtime INT8",
    ("meta", None): "Meta reference predictor (set_image)",
    ("transformers", None): "transformers processor + model",
}
REFERENCE_KINDS = ("meta", "transformers")
PACKAGES = (
    "perceptra-seg",
    "torch",
    "transformers",
    "onnxruntime",
    "onnx",
    "segment-anything",
    "sam2",
    "numpy",
    "fastapi",
    "uvicorn",
    "httpx",
)
_CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


# ---------------------------------------------------------------------------------------------------- machine


def machine_info(cpuinfo: str | None = None, meminfo: str | None = None) -> dict[str, Any]:
    """CPU model and features, core counts, RAM, OS, Python and package versions (no heavy imports)."""
    cpuinfo = cpuinfo if cpuinfo is not None else _read("/proc/cpuinfo")
    meminfo = meminfo if meminfo is not None else _read("/proc/meminfo")
    model: str | None = None
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    ram_gib = None
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            ram_gib = round(int(line.split()[1]) / 1024**2, 1)
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_model": model or platform.processor() or "unknown",
        "cpu_features": [f for f in _CPU_FEATURES if f in flags],
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": ram_gib,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "versions": versions,
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------------- analysis


def _ok(
    workers: Iterable[dict[str, Any]], kind: str, variant: str, runtime: str | None = None
) -> dict[str, Any] | None:
    for w in workers:
        if w.get("kind") == kind and w.get("variant") == variant and w.get("runtime") == runtime:
            return w
    return None


def _ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    return round(a / b, digits) if a is not None and b else None


def _median(worker: dict[str, Any] | None, section: str = "encoder") -> float | None:
    if worker is None or worker.get("status") != "ok" or section not in worker:
        return None
    value = worker[section].get("median_ms")
    return float(value) if value is not None else None


def _variants(results: dict[str, Any]) -> list[str]:
    return list(results["plan"]["variants"])


def analyse(results: dict[str, Any]) -> dict[str, Any]:
    """Every derived table: encoder (with ratios to the best reference and to the compute floor), interactive,
    decoder, seed baseline, REST, memory, targets and the list of what could not be measured."""
    workers = results.get("workers", [])
    calibration = results.get("calibration", {})
    start = calibration.get("start", {})
    gflops = (start.get("matmul_gflops") or {}).get("float32")
    flops = start.get("flops") or {}
    agreement = {(row["variant"], row["runtime"]): row for row in results.get("agreement", [])}
    encoder_rows, floors = [], {}
    for variant in _variants(results):
        gflop = (flops.get(variant) or {}).get("gflop")
        floor_ms = round(gflop / gflops * 1000.0, 1) if gflop and gflops else None
        floors[variant] = {"gflop": gflop, "floor_ms": floor_ms}
        references = [_median(_ok(workers, kind, variant)) for kind in REFERENCE_KINDS]
        best_reference = min((m for m in references if m is not None), default=None)
        fp32 = {rt: _median(_ok(workers, "ours", variant, rt)) for rt in ("torch-fp32", "onnx-fp32")}
        for (kind, runtime), label in IMPLEMENTATIONS.items():
            worker = _ok(workers, kind, variant, runtime)
            if worker is None:
                continue
            median = _median(worker)
            row: dict[str, Any] = {
                "variant": variant,
                "implementation": label,
                "kind": kind,
                "runtime": runtime,
                "status": worker.get("status"),
                "peak_rss_mb": worker.get("peak_rss_mb"),
            }
            if median is None:
                row["note"] = worker.get("reason") or worker.get("error") or "not measured"
            else:
                enc = worker["encoder"]
                row.update(
                    {
                        "median_ms": median,
                        "p95_ms": enc.get("p95_ms"),
                        "n": enc.get("n"),
                        "speedup_vs_best_reference": _ratio(best_reference, median),
                        "x_floor": _ratio(median, floor_ms),
                    }
                )
                if kind == "ours" and runtime != "torch-fp32":
                    row["speedup_vs_torch_fp32"] = _ratio(fp32["torch-fp32"], median)
                if runtime == "onnx-int8":
                    row["speedup_vs_onnx_fp32"] = _ratio(fp32["onnx-fp32"], median)
                if (variant, runtime) in agreement:
                    row["mean_iou"] = agreement[variant, runtime]["mean_iou"]
                    row["min_iou"] = agreement[variant, runtime]["min_iou"]
            encoder_rows.append(row)
    return {
        "floors": floors,
        "mask_complexity": {
            w["variant"]: {k: v for k, v in w["masks"].items() if k.startswith("mean_")}
            for w in workers
            if w.get("kind") == "ours" and w.get("runtime") == "torch-fp32" and w.get("status") == "ok" and "masks" in w
        },
        "timing": [
            {"name": w.get("name") or w.get("kind"), "status": w.get("status"), "wall_s": w.get("wall_s")}
            for w in workers
        ],
        "targets": _targets(results, encoder_rows, workers),
        "encoder": encoder_rows,
        "interactive": _interactive(workers, results),
        "decoder": [
            {"variant": w["variant"], "runtime": w["runtime"], **w["decoder"]}
            for w in workers
            if w.get("status") == "ok" and "decoder" in w
        ],
        "seed": [{"variant": w["variant"], **w["seed"]} for w in workers if w.get("status") == "ok" and "seed" in w],
        "rest": _rest(workers),
        "memory": _memory(workers),
        "unavailable": [
            f"{w.get('name') or w.get('kind')}: {w.get('reason') or w.get('error')}"
            for w in workers
            if w.get("status") != "ok"
        ],
    }


def _interactive(workers: list[dict[str, Any]], results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for variant in _variants(results):
        reference = _ok(workers, "meta", variant)
        ref_rows = {(r["prompts"], r["mode"]): r for r in (reference or {}).get("interactive", [])}
        ours = {
            w["runtime"]: {(r["prompts"], r["mode"]): r for r in w["interactive"]}
            for w in workers
            if w.get("kind") == "ours"
            and w.get("variant") == variant
            and w.get("status") == "ok"
            and "interactive" in w
        }
        modes = {"single": 0, "batch": 1}
        keys = sorted({k for table in (ref_rows, *ours.values()) for k in table}, key=lambda k: (k[0], modes[k[1]]))
        for key in keys:
            ref = ref_rows.get(key)
            row: dict[str, Any] = {
                "variant": variant,
                "prompts": key[0],
                "mode": key[1],
                "reference_ms": ref["median_ms"] if ref else None,
                "reference_predict_only_ms": ref["predict_only_ms"] if ref else None,
            }
            for runtime, table in ours.items():
                mine = table.get(key)
                row[f"{runtime}_ms"] = mine["median_ms"] if mine else None
                row[f"{runtime}_decoder_ms"] = mine.get("decoder_ms") if mine else None
                row[f"{runtime}_speedup"] = _ratio(row["reference_ms"], row[f"{runtime}_ms"])
            rows.append(row)
    return rows


def _rest(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for w in workers:
        if w.get("kind") != "rest" or w.get("status") != "ok":
            continue
        sdk_p50 = w["sdk"]["median_ms"]
        single = next((r for r in w["runs"] if r["concurrency"] == 1 and r.get("p50_ms") is not None), None)
        rows.append(
            {
                "variant": w["variant"],
                "sdk_p50_ms": sdk_p50,
                "runs": w["runs"],
                # paired per request: client latency − the server's own latency_ms (SDK call + result shaping)
                "http_overhead_ms": single["http_overhead_p50_ms"] if single else None,
                # unpaired: client p50 − the in-process SDK p50 measured before the server started
                "client_minus_sdk_ms": round(single["p50_ms"] - sdk_p50, 2) if single else None,
                "server_peak_rss_mb": w.get("server_memory", {}).get("peak_rss_mb"),
                "embed_ms": w.get("embed_ms"),
                "server_startup_s": w.get("server_startup_s"),
            }
        )
    return rows


def _memory(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for w in workers:
        if w.get("kind") not in ("ours", "meta", "transformers", "rest") or w.get("status") != "ok":
            continue
        label = IMPLEMENTATIONS.get((w["kind"], w.get("runtime")), "REST worker (in-process SDK + HTTP clients)")
        rows.append(
            {
                "variant": w["variant"],
                "configuration": label,
                "peak_rss_mb": w.get("peak_rss_mb"),
                "rss_after_load_mb": w.get("rss_after_load_mb"),
                "gpu_peak_mb": w.get("gpu_peak_mb"),
            }
        )
        if w["kind"] == "rest":
            rows.append(
                {
                    "variant": w["variant"],
                    "configuration": "REST server (uvicorn, ours · torch fp32)",
                    "peak_rss_mb": w.get("server_memory", {}).get("peak_rss_mb"),
                    "rss_after_load_mb": None,
                    "gpu_peak_mb": None,
                }
            )
    return rows


def _target(name: str, value: float | None, threshold: float, higher_is_better: bool, detail: str) -> dict[str, Any]:
    met = None if value is None else (value >= threshold if higher_is_better else value <= threshold)
    return {"target": name, "value": value, "threshold": threshold, "met": met, "detail": detail}


def _targets(
    results: dict[str, Any], encoder_rows: list[dict[str, Any]], workers: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    rows = []
    by = {(r["variant"], r["kind"], r["runtime"]): r for r in encoder_rows}
    encoder_ran = "encoder" in results["plan"]["sections"]
    for variant in _variants(results) if encoder_ran else []:
        fp32 = by.get((variant, "ours", "torch-fp32"), {})
        rows.append(
            _target(
                f"{variant}: encoder torch fp32 no slower than the fastest reference (speedup ≥ 1)",
                fp32.get("speedup_vs_best_reference"),
                1.0,
                True,
                "best reference median / ours median",
            )
        )
        for runtime, base in (("torch-bf16", "speedup_vs_torch_fp32"), ("onnx-int8", "speedup_vs_onnx_fp32")):
            row = by.get((variant, "ours", runtime), {})
            rows.append(
                _target(
                    f"{variant}: {runtime} ≥ 1.5× faster than fp32 of its runtime",
                    row.get(base),
                    1.5,
                    True,
                    f"{base.replace('_', ' ')}",
                )
            )
            mean_iou = row.get("mean_iou")
            rows.append(
                _target(
                    f"{variant}: {runtime} mask IoU vs torch fp32 ≥ 0.97 (min over prompts)",
                    row.get("min_iou"),
                    0.97,
                    True,
                    f"mean IoU {'–' if mean_iou is None else mean_iou}",
                )
            )
    for w in workers:
        if w.get("status") == "ok" and "decoder" in w and w.get("runtime") == "torch-fp32":
            rows.append(
                _target(
                    f"{w['variant']}: one cached prompt (decoder + RLE) ≤ 1.5× decoder alone",
                    w["decoder"]["ratio"],
                    1.5,
                    False,
                    "SDK call (RLE) median / backend.decode median",
                )
            )
        if w.get("status") == "ok" and "seed" in w:
            rows.append(
                _target(
                    f"{w['variant']}: {w['seed']['prompts']} prompts ≥ 5× faster than re-encode per call",
                    w["seed"]["speedup"],
                    5.0,
                    True,
                    "cache off / cache on, one call per prompt",
                )
            )
    for row in _rest(workers):
        rows.append(
            _target(
                f"{row['variant']}: HTTP layer adds < 15 ms (1 client, p50)",
                row["http_overhead_ms"],
                15.0,
                False,
                "per request: client latency − server latency_ms (SDK call)",
            )
        )
    return rows


def write_results(
    results: dict[str, Any],
    out_dir: Path,
    analyse_fn: Callable[[dict[str, Any]], dict[str, Any]],
    render_fn: Callable[[dict[str, Any], dict[str, Any]], str],
) -> list[Path]:
    """Write ``results.json`` (raw + ``analyse_fn``'s derived tables) and ``results.md`` (``render_fn``) into
    ``out_dir``; returns their paths. Shared by the CPU run and the GPU run."""
    derived = analyse_fn(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "results.json", out_dir / "results.md"
    json_path.write_text(json.dumps({**results, "derived": derived}, indent=2, default=str))
    md_path.write_text(render_fn(results, derived))
    return [json_path, md_path]


def rewrite_from_saved(argv: list[str], default: Path, write: Callable[[dict[str, Any], Path], list[Path]]) -> None:
    """``python -m bench.<report> [results.json]``: rebuild the derived tables and markdown from a saved run."""
    source = Path(argv[1]) if len(argv) > 1 else default
    loaded = json.loads(source.read_text())
    loaded.pop("derived", None)
    for written in write(loaded, source.parent):
        print(written)


def write_report(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``results.json`` (raw + derived) and ``results.md``; returns their paths."""
    return write_results(results, out_dir, analyse, render_markdown)


if __name__ == "__main__":
    rewrite_from_saved(sys.argv, Path("bench/results/results.json"), write_report)
