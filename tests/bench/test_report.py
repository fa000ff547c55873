"""The benchmark suite's own logic: statistics, plans, mask agreement and the report writer (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.agreement import load_masks, mask_agreement, mask_iou, save_masks
from bench.measure import Budget, summarize, time_calls, time_calls_with_part
from bench.plan import Plan, make_plan
from bench.report import analyse, machine_info, write_report

CPUINFO = """processor\t: 0
model name\t: Example CPU 9000
flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile
processor\t: 1
model name\t: Example CPU 9000
flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile
"""
MEMINFO = "MemTotal:       25165824 kB\nMemFree:        1000 kB\n"


def test_machine_info_reads_cpu_model_features_and_ram() -> None:
    info = machine_info(CPUINFO, MEMINFO)
    assert info["cpu_model"] == "Example CPU 9000"
    assert info["cpu_features"] == ["avx2", "avx512f", "avx512_bf16", "amx_tile"]
    assert info["ram_gib"] == 24.0
    assert info["versions"]["numpy"] == np.__version__


def test_summarize_median_and_nearest_rank_p95() -> None:
    stats = summarize([float(v) for v in range(1, 21)])  # 1..20
    assert stats == {"n": 20, "median_ms": 10.5, "p95_ms": 19.0, "min_ms": 1.0, "mean_ms": 10.5}
    assert summarize([7.0])["p95_ms"] == 7.0
    with pytest.raises(ValueError):
        summarize([])


def test_time_calls_warms_up_then_times_at_least_min_repeats() -> None:
    seen: list[int] = []
    samples = time_calls(seen.append, Budget(warmup=2, min_repeats=3, max_repeats=10, seconds=0.0))
    assert seen == [0, 1, 2, 3, 4] and len(samples) == 3
    seen.clear()
    samples = time_calls(seen.append, Budget(warmup=0, min_repeats=1, max_repeats=4, seconds=60.0))
    assert len(samples) == 4 and seen == [0, 1, 2, 3]  # budget not used up: stops at max_repeats


def test_time_calls_with_part_leaves_warm_up_out() -> None:
    total = [0.0]

    def call(index: int) -> None:
        total[0] += 1.0 if index == 0 else 0.004 * index  # the warm-up call's part is large

    samples, parts = time_calls_with_part(
        call, lambda: total[0], Budget(warmup=1, min_repeats=2, max_repeats=2, seconds=0.0)
    )
    assert len(samples) == 2 and parts == pytest.approx([4.0, 8.0])


def test_plan_round_trip_and_narrowing() -> None:
    plan = make_plan(quick=True, variants=["vit_b"], sections=["rest", "encoder"], runtimes=["onnx-int8"])
    assert plan.variants == ("vit_b",) and plan.sections == ("encoder", "rest") and plan.runtimes == ("onnx-int8",)
    assert plan.seed_variants == ("vit_b",) and plan.rest_variants == ("vit_b",)
    assert Plan.from_dict(json.loads(json.dumps(plan.as_dict()))) == plan
    with pytest.raises(ValueError, match="unknown variant"):
        make_plan(quick=False, variants=["vit_z"])


def test_mask_agreement_against_torch_fp32(tmp_path: Path) -> None:
    reference = np.zeros((3, 5, 11), dtype=bool)
    reference[0, :, :4] = True  # 20 pixels
    reference[1, 2, 2] = True
    other = reference.copy()
    other[0, :, 4] = True  # 25 pixels, 20 shared
    other[1] = False  # disagrees completely
    save_masks(tmp_path / "fp32.npz", reference)
    save_masks(tmp_path / "bf16.npz", other)
    assert np.array_equal(load_masks(tmp_path / "bf16.npz"), other)
    assert mask_iou(reference[2], other[2]) == 1.0  # both empty
    workers = [
        {"kind": "ours", "status": "ok", "variant": "vit_b", "runtime": rt, "masks": {"path": str(tmp_path / f)}}
        for rt, f in (("torch-fp32", "fp32.npz"), ("torch-bf16", "bf16.npz"))
    ]
    [row] = mask_agreement(workers)
    assert row["runtime"] == "torch-bf16" and row["prompts"] == 3 and row["empty_reference_masks"] == 1
    assert row["min_iou"] == 0.0 and row["mean_iou"] == pytest.approx((0.8 + 0.0 + 1.0) / 3, abs=1e-4)


def _encoder_worker(kind: str, runtime: str | None, median: float, **extra: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "variant": "vit_b",
        "runtime": runtime,
        "status": "ok",
        "peak_rss_mb": 900.0,
        "encoder": {"median_ms": median, "p95_ms": median * 1.1, "n": 3},
        **extra,
    }


def _results() -> dict[str, Any]:
    plan = make_plan(quick=True, variants=["vit_b"])
    workers = [
        _encoder_worker(
            "ours",
            "torch-fp32",
            4000.0,
            masks={"path": "unused", "prompts": 14, "mean_polygons": 3.0, "mean_vertices": 120.0},
            decoder={"decoder": {"median_ms": 20.0}, "cached_prompt": {"median_ms": 40.0}, "ratio": 2.0},
            seed={
                "prompts": 10,
                "baseline_ms": 42000.0,
                "ours_ms": 6000.0,
                "ours_batched_ms": 4500.0,
                "encoder_calls": {"baseline": 10, "ours": 1, "ours_batched": 1},
                "speedup": 7.0,
                "speedup_batched": 9.33,
            },
            interactive=[{"prompts": 2, "mode": "single", "median_ms": 30.0}],
        ),
        _encoder_worker("ours", "torch-bf16", 2000.0),
        {
            "kind": "ours",
            "variant": "vit_b",
            "runtime": "onnx-fp32",
            "status": "unavailable",
            "reason": "ONNX backend not available: no module named onnxruntime",
            "name": "ours_vit_b_onnx-fp32",
        },
        _encoder_worker(
            "meta",
            None,
            5000.0,
            interactive=[{"prompts": 2, "mode": "single", "median_ms": 60.0, "predict_only_ms": 50.0}],
        ),
        _encoder_worker("transformers", None, 8000.0),
        {
            "kind": "rest",
            "variant": "vit_b",
            "runtime": None,
            "status": "ok",
            "peak_rss_mb": 1000.0,
            "sdk": {"median_ms": 40.0},
            "server_memory": {"peak_rss_mb": 1500.0},
            "embed_ms": 4100.0,
            "server_startup_s": 12.0,
            "runs": [
                {
                    "concurrency": 1,
                    "requests": 16,
                    "errors": 0,
                    "wall_s": 1.0,
                    "requests_per_s": 20.0,
                    "p50_ms": 48.5,
                    "p95_ms": 60.0,
                    "server_p50_ms": 45.0,
                    "http_overhead_p50_ms": 3.5,
                    "http_overhead_p95_ms": 5.0,
                    "response_bytes_p50": 2048.0,
                }
            ],
        },
    ]
    return {
        "schema": 1,
        "mode": "quick",
        "device": "cpu",
        "started_at": "t0",
        "finished_at": "t1",
        "wall_s": 60.0,
        "plan": plan.as_dict(),
        "machine": machine_info(CPUINFO, MEMINFO),
        "calibration": {
            "start": {
                "matmul_gflops": {"float32": 100.0, "bfloat16": 200.0},
                "torch_threads": 2,
                "cuda_device": None,
                "flops": {"vit_b": {"gflop": 972.0}},
            },
            "end": {"matmul_gflops": {"float32": 90.0, "bfloat16": 180.0}},
        },
        "workers": workers,
        "agreement": [
            {
                "variant": "vit_b",
                "runtime": "torch-bf16",
                "prompts": 14,
                "mean_iou": 0.985,
                "min_iou": 0.95,
                "empty_reference_masks": 0,
            }
        ],
        "load_average": {"start": [2.0, 1.5, 1.0], "end": [2.1, 1.6, 1.1]},
    }


def test_analyse_ratios_floor_and_targets() -> None:
    derived = analyse(_results())
    rows = {r["implementation"]: r for r in derived["encoder"]}
    fp32 = rows["ours · torch fp32"]
    assert fp32["speedup_vs_best_reference"] == 1.25  # best reference: Meta 5000 ms (transformers 8000)
    assert derived["floors"]["vit_b"] == {"gflop": 972.0, "floor_ms": 9720.0}
    assert fp32["x_floor"] == round(4000.0 / 9720.0, 2)
    bf16 = rows["ours · torch bf16 autocast"]
    assert bf16["speedup_vs_torch_fp32"] == 2.0 and bf16["min_iou"] == 0.95
    assert "ONNX backend not available" in rows["ours · ONNX Runtime fp32"]["note"]
    targets = {t["target"]: t for t in derived["targets"]}
    assert targets["vit_b: encoder torch fp32 no slower than the fastest reference (speedup ≥ 1)"]["met"] is True
    assert targets["vit_b: torch-bf16 ≥ 1.5× faster than fp32 of its runtime"]["met"] is True
    assert targets["vit_b: torch-bf16 mask IoU vs torch fp32 ≥ 0.97 (min over prompts)"]["met"] is False
    assert targets["vit_b: onnx-int8 ≥ 1.5× faster than fp32 of its runtime"]["met"] is None
    assert targets["vit_b: one cached prompt (decoder + RLE) ≤ 1.5× decoder alone"]["met"] is False
    assert targets["vit_b: 10 prompts ≥ 5× faster than re-encode per call"]["met"] is True
    http = targets["vit_b: HTTP layer adds < 15 ms (1 client, p50)"]
    assert http["value"] == 3.5 and http["met"] is True
    assert derived["rest"][0]["client_minus_sdk_ms"] == 8.5
    [interactive] = derived["interactive"]
    assert interactive["torch-fp32_ms"] == 30.0 and interactive["torch-fp32_speedup"] == 2.0
    assert any("onnx-fp32" in item for item in derived["unavailable"])
    server = [m for m in derived["memory"] if m["configuration"].startswith("REST server")]
    assert server[0]["peak_rss_mb"] == 1500.0


def test_write_report_json_and_markdown(tmp_path: Path) -> None:
    json_path, md_path = write_report(_results(), tmp_path)
    saved = json.loads(json_path.read_text())
    assert saved["derived"]["seed"][0]["speedup"] == 7.0
    markdown = md_path.read_text()
    assert "**Quick run**" in markdown and "Example CPU 9000" in markdown
    assert "| vit_b | ours · torch fp32 | 4,000.0 | 4,400.0 | 3 | 1.25× |" in markdown
    assert "| vit_b | 10 | 42,000.0 | 6,000.0 | 4,500.0 | 7.00× | 9.33× | 10 / 1 / 1 |" in markdown
    assert "HTTP layer 3.5 ms per request at 1 client" in markdown
    assert "| vit_b: torch-bf16 mask IoU vs torch fp32 ≥ 0.97 (min over prompts) | 0.95 | 0.97 | missed |" in markdown
    assert "ONNX backend not available" in markdown
    assert "vit_b: 3.0 polygons / 120 vertices per mask" in markdown


def test_targets_of_sections_that_did_not_run_are_left_out() -> None:
    results = _results()
    results["plan"] = make_plan(quick=True, variants=["vit_b"], sections=["interactive", "seed"]).as_dict()
    names = [t["target"] for t in analyse(results)["targets"]]
    assert not any("encoder" in name or "IoU" in name for name in names)
    assert "vit_b: 10 prompts ≥ 5× faster than re-encode per call" in names
