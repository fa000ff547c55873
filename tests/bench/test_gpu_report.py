"""The GPU benchmark's own logic: plan narrowing, per-precision isolation, the deadline, mask IoU and the tables
(no timing, no model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.agreement import save_masks
from bench.gpu import Deadline, summary_lines
from bench.gpu_plan import GPU_FULL, GpuPlan, make_gpu_plan
from bench.gpu_report import analyse_gpu, render_gpu_markdown, write_gpu_report
from bench.gpu_rows import _each_precision


def test_gpu_plan_round_trip_and_narrowing() -> None:
    plan = make_gpu_plan(quick=True, variants=["hiera_tiny"], precisions=["bf16"], batch=4)
    # fp32 is kept (and first): the other precisions' masks are compared with it
    assert plan.variants == ("hiera_tiny",) and plan.precisions == ("fp32", "bf16") and plan.batch == 4
    assert GpuPlan.from_dict(json.loads(json.dumps(plan.as_dict()))) == plan
    assert GPU_FULL.variants == ("vit_b", "hiera_tiny", "hiera_large", "vit_h") and GPU_FULL.batch == 8
    assert GPU_FULL.precisions == ("fp32", "fp16", "bf16") and make_gpu_plan(quick=True).precisions == ("fp32", "bf16")
    with pytest.raises(ValueError, match="unknown variant"):
        make_gpu_plan(quick=False, variants=["vit_z"])
    with pytest.raises(ValueError, match="unknown precision"):
        make_gpu_plan(quick=False, precisions=["int4"])
    with pytest.raises(ValueError, match="batch"):
        make_gpu_plan(quick=False, batch=0)


def test_one_failing_precision_becomes_its_row() -> None:
    plan = make_gpu_plan(quick=False)

    def measure(precision: str) -> dict[str, Any]:
        if precision == "fp16":
            raise TypeError("fp16 not supported here")
        return {"embed": {"median_ms": 1.0}}

    rows = _each_precision(plan, "cpu", measure)
    assert [r["precision"] for r in rows] == ["fp32", "fp16", "bf16"]
    assert rows[1]["error"] == "TypeError: fp16 not supported here" and "embed" not in rows[1]
    assert rows[0]["embed"] == {"median_ms": 1.0} and "error" not in rows[2]

    def broken(precision: str) -> dict[str, Any]:
        raise RuntimeError(f"no {precision}")

    with pytest.raises(RuntimeError, match="every precision failed; first: RuntimeError: no fp32"):
        _each_precision(plan, "cpu", broken)


def test_deadline_counts_from_start_and_zero_means_none() -> None:
    now = [100.0]
    deadline = Deadline(30.0, clock=lambda: now[0])
    assert not deadline.passed()
    now[0] = 129.9
    assert not deadline.passed()
    now[0] = 130.0
    assert deadline.passed()
    assert not Deadline(0.0, clock=lambda: now[0]).passed()


def _row(
    precision: str, embed_ms: float, b1_ms: float, batch_ms: float, decoder_ms: float, masks: Path, **extra: Any
) -> dict[str, Any]:
    return {
        "precision": precision,
        "embed": {"median_ms": embed_ms, "images_per_s": round(1000 / embed_ms, 2)},
        "encoder_b1": {"median_ms": b1_ms, "images_per_s": round(1000 / b1_ms, 2), "batch": 1},
        "encoder_batch": {"median_ms": batch_ms, "images_per_s": round(8000 / batch_ms, 2), "batch": 8},
        "decoder": {"median_ms": decoder_ms},
        "masks_path": str(masks),
        "gpu_peak_mb": 512.0,
        **extra,
    }


def _results(tmp_path: Path) -> dict[str, Any]:
    reference = np.zeros((2, 4, 10), dtype=bool)
    reference[:, :, :5] = True  # 20 pixels per mask
    half = reference.copy()
    half[0, :, :] = False
    half[0, :, :5] = reference[0, :, :5]
    half[0, :, 2:5] = False  # 8 of the reference's 20 pixels: IoU 0.4
    paths = {name: tmp_path / f"{name}.npz" for name in ("ours_fp32", "ours_bf16", "meta_fp32", "meta_bf16")}
    save_masks(paths["ours_fp32"], reference)
    save_masks(paths["ours_bf16"], half)
    save_masks(paths["meta_fp32"], reference)
    save_masks(paths["meta_bf16"], reference)
    plan = make_gpu_plan(quick=False, variants=["vit_b"], precisions=["bf16"])
    ours = {
        "kind": "gpu-ours",
        "name": "gpu-ours_vit_b",
        "variant": "vit_b",
        "status": "ok",
        "implementation": "ours",
        "environment": {"device_name": "Example GPU", "torch": "9.9"},
        "rows": [
            _row("fp32", 20.0, 10.0, 64.0, 4.0, paths["ours_fp32"], decoder_only={"median_ms": 1.5}),
            _row("bf16", 10.0, 5.0, 32.0, 3.0, paths["ours_bf16"], decoder_only={"median_ms": 1.0}),
        ],
    }
    meta = {
        "kind": "gpu-meta",
        "name": "gpu-meta_vit_b",
        "variant": "vit_b",
        "status": "ok",
        "implementation": "meta",
        "rows": [
            _row("fp32", 25.0, 10.0, 80.0, 6.0, paths["meta_fp32"]),
            {"precision": "bf16", "error": "TypeError: bf16\nmore", "traceback": "..."},
        ],
    }
    return {
        "plan": plan.as_dict(),
        "device": "cuda",
        "command": "python -m bench.gpu",
        "environment": ours["environment"],
        "workers": [
            {"kind": "checkpoint", "name": "checkpoint_vit_b", "variant": "vit_b", "status": "ok"},
            ours,
            meta,
            {
                "kind": "gpu-ours",
                "name": "gpu-ours_vit_h",
                "variant": "vit_h",
                "status": "failed",
                "error": "OutOfMemoryError: CUDA out of memory\ntraceback",
            },
        ],
        "skipped": ["gpu-meta_vit_h", "gpu-meta_hiera_tiny (no checkpoint)"],
        "interrupted": ["gpu-ours_vit_l"],
    }


def test_analyse_gpu_speedups_ious_and_problems(tmp_path: Path) -> None:
    derived = analyse_gpu(_results(tmp_path))
    rows = {(e["implementation"], e["precision"]): e for e in derived["encoder"]}
    assert set(rows) == {("ours", "fp32"), ("ours", "bf16"), ("meta", "fp32")}  # Meta's bf16 row failed
    ours_fp32 = rows[("ours", "fp32")]
    assert ours_fp32["encoder_batch_images_per_s"] == 125.0
    # images/s ratios: embed 50 / 40, module b1 100 / 100, batch 125 / 100
    assert ours_fp32["speedup_vs_meta"] == {"embed": 1.25, "encoder_b1": 1.0, "encoder_batch": 1.25}
    assert rows[("ours", "bf16")]["speedup_vs_meta"] == {"embed": None, "encoder_b1": None, "encoder_batch": None}
    assert rows[("ours", "bf16")]["iou_vs_fp32"] == {"mean": 0.7, "min": 0.4}  # masks 0.4 and 1.0
    decoder = {d["precision"]: d for d in derived["decoder"]}
    assert decoder["fp32"]["meta_over_ours"] == 1.5 and decoder["fp32"]["ours_decode_only_p50_ms"] == 1.5
    assert decoder["fp32"]["iou_ours_vs_meta"] == {"mean": 1.0, "min": 1.0}
    assert decoder["bf16"]["meta_p50_ms"] is None and decoder["bf16"]["iou_ours_vs_meta"] is None
    problems = {p["name"]: p for p in derived["problems"]}
    assert problems["gpu-ours_vit_h"]["detail"] == "OutOfMemoryError: CUDA out of memory"
    assert problems["gpu-meta_vit_b bf16"] == {
        "name": "gpu-meta_vit_b bf16",
        "status": "failed",
        "detail": "TypeError: bf16",
    }
    assert problems["gpu-meta_vit_h"]["status"] == "skipped"
    assert problems["gpu-meta_hiera_tiny (no checkpoint)"]["detail"] == "no checkpoint"
    assert problems["gpu-ours_vit_l"]["status"] == "interrupted"


def test_markdown_tables_and_rebuild_without_masks(tmp_path: Path) -> None:
    results = _results(tmp_path)
    markdown = render_gpu_markdown(results, analyse_gpu(results))
    assert markdown.startswith("# GPU benchmark: Example GPU\n")
    assert (
        "| vit_b | fp32 | ours (perceptra-seg) | 20.0 | 50.0 | 10.0 | 100.0 | 64.0 | 125.0 | (reference) | 512.0 "
        "| 1.25× / 1.00× / 1.25× |"
    ) in markdown
    assert (
        "| vit_b | bf16 | ours (perceptra-seg) | 10.0 | 100.0 | 5.0 | 200.0 | 32.0 | 250.0 | 0.700 / 0.400 |"
        in markdown
    )
    assert "| vit_b | fp32 | 4.0 | 1.5 | 6.0 | 1.50× | 1.000 / 1.000 |" in markdown
    assert "| gpu-meta_vit_h | skipped | not started: the run's deadline had passed |" in markdown
    assert "encoder b8 ms" in markdown and "automatic mask generation and video" in markdown

    out = tmp_path / "out"
    json_path, md_path = write_gpu_report({**results, "ious": analyse_gpu(results)["ious"]}, out)
    for path in tmp_path.glob("*.npz"):
        path.unlink()  # the masks stay on the machine that ran; the stored IoUs must survive a rebuild
    saved = json.loads(json_path.read_text())
    saved.pop("derived")
    rebuilt = analyse_gpu(saved)
    assert rebuilt["decoder"][0]["iou_ours_vs_meta"] == {"mean": 1.0, "min": 1.0}
    assert render_gpu_markdown(saved, rebuilt) == md_path.read_text()


def test_progress_lines_per_precision(tmp_path: Path) -> None:
    ours, meta = _results(tmp_path)["workers"][1:3]
    assert summary_lines(ours)[0] == (
        "fp32: embed 20.00 ms (50.00 img/s), b1 10.00 ms (100.00 img/s), "
        "b8 64.00 ms (125.00 img/s), decoder p50 4.00 ms"
    )
    assert summary_lines(meta)[1] == "bf16: TypeError: bf16"
    assert summary_lines({"status": "failed", "error": "boom"}) == []
