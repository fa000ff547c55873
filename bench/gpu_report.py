"""The GPU benchmark's report: derived tables (speed-ups, mask IoU) and ``results.md`` / ``results.json``.

``python -m bench.gpu_report OUT/results.json`` rebuilds ``results.md`` from a saved JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from .agreement import load_masks, mask_iou
from .markdown import fmt, table
from .report import rewrite_from_saved, write_results

__all__ = ["analyse_gpu", "gpu_rows_by_key", "mask_ious", "render_gpu_markdown", "write_gpu_report"]

IMPLEMENTATIONS = ("ours", "meta")
_LABELS = {"ours": "ours (perceptra-seg)", "meta": "Meta predictor"}

NOTES = [
    "Every row runs on random-weight models built from Meta's code with a fixed seed and saved in Meta's checkpoint "
    "format; our `Segmentor` loads that file, Meta's predictor (segment-anything `SamPredictor`, sam2 "
    "`SAM2ImagePredictor`) uses the same weights. Speed does not depend on the weights' values; mask IoU measured on "
    "random weights is indicative only.",
    "*embed* is the user-level call on one 1024×683 photograph, preprocessing included: ours `Segmentor.embed` "
    "(every call a cache-missing copy), Meta's `set_image`.",
    "*encoder b1 / bN* time the encoder module alone on the same float32 `[B, 3, 1024, 1024]` tensor: ours the "
    "backend's `model.get_image_embeddings`, Meta's `image_encoder` (SAM 1) / `forward_image` (SAM 2.1: trunk, FPN "
    "neck and high-resolution feature convolutions, the same work). Our `Segmentor` encodes one image per call (no "
    "batched encode yet), so batch N is measured on the module for both sides.",
    "fp16 / bf16: ours sets `runtime.precision` (autocast inside the backend); Meta's calls run inside "
    "`torch.autocast` (as sam2's README shows). Every row runs under `torch.inference_mode`. TF32 switches are "
    "torch's defaults (see the machine table), the same for both sides.",
    "*decoder*: one box prompt on the embedded image, returned as a full-size boolean mask on the host: ours "
    "`segment(handle, boxes=[box], output_formats=['numpy'])`, Meta's `predict(box=box, multimask_output=False)`; "
    "*decode only* is our `backend.decode` (low-resolution logits and scores on the host).",
    "Mask IoU: masks of a few box prompts, each precision against fp32 of the same implementation, and ours against "
    "Meta's at the same precision.",
    "Not measured: automatic mask generation and video (the product has neither yet); `torch.compile` (its "
    "compile time per variant and precision does not fit the run's few-minute budget).",
]


def _ok_gpu_workers(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for w in results.get("workers", []) if w.get("kind", "").startswith("gpu-") and w.get("status") == "ok"]


def gpu_rows_by_key(results: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """``(variant, implementation, precision) -> row`` of every successful GPU worker."""
    out = {}
    for worker in _ok_gpu_workers(results):
        for row in worker.get("rows", []):
            if "error" not in row:
                out[(worker["variant"], worker["implementation"], row["precision"])] = row
    return out


def _iou(path_a: str, path_b: str) -> dict[str, float] | None:
    a, b = load_masks(Path(path_a)), load_masks(Path(path_b))
    if a.shape != b.shape:
        return None
    ious = [mask_iou(x, y) for x, y in zip(a, b, strict=True)]
    return {"mean": round(float(np.mean(ious)), 4), "min": round(float(np.min(ious)), 4)}


def mask_ious(rows: dict[tuple[str, str, str], dict[str, Any]]) -> dict[str, dict[str, dict[str, float] | None]]:
    """IoU of saved masks: ``vs_fp32`` keyed ``variant/impl/precision`` (each non-fp32 row against fp32 of the same
    implementation) and ``ours_vs_meta`` keyed ``variant/precision``. Missing files are left out."""
    vs_fp32: dict[str, dict[str, float] | None] = {}
    ours_vs_meta: dict[str, dict[str, float] | None] = {}
    for (variant, impl, precision), row in sorted(rows.items()):
        path = row.get("masks_path")
        if not path or not Path(path).is_file():
            continue
        reference = rows.get((variant, impl, "fp32"), {}).get("masks_path")
        if precision != "fp32" and reference and Path(reference).is_file():
            vs_fp32[f"{variant}/{impl}/{precision}"] = _iou(path, reference)
        if impl == "ours":
            other = rows.get((variant, "meta", precision), {}).get("masks_path")
            if other and Path(other).is_file():
                ours_vs_meta[f"{variant}/{precision}"] = _iou(path, other)
    return {"vs_fp32": vs_fp32, "ours_vs_meta": ours_vs_meta}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _get(row: dict[str, Any] | None, section: str, key: str) -> float | None:
    value = (row or {}).get(section, {}).get(key)
    return float(value) if value is not None else None


def analyse_gpu(results: dict[str, Any]) -> dict[str, Any]:
    """Derived tables: ``encoder`` and ``decoder`` rows (plan order), mask ``ious`` and the ``problems``."""
    rows = gpu_rows_by_key(results)
    # the run stores the IoUs (the masks stay in its work directory); recompute only when it did not
    ious = results.get("ious") or mask_ious(rows)
    plan = results["plan"]
    encoder, decoder = [], []
    for variant in plan["variants"]:
        for precision in plan["precisions"]:
            ours, meta = rows.get((variant, "ours", precision)), rows.get((variant, "meta", precision))
            for impl, row in (("ours", ours), ("meta", meta)):
                if row is None:
                    continue
                entry: dict[str, Any] = {"variant": variant, "precision": precision, "implementation": impl}
                for section in ("embed", "encoder_b1", "encoder_batch"):
                    entry[f"{section}_ms"] = _get(row, section, "median_ms")
                    entry[f"{section}_images_per_s"] = _get(row, section, "images_per_s")
                entry["iou_vs_fp32"] = ious["vs_fp32"].get(f"{variant}/{impl}/{precision}")
                entry["gpu_peak_mb"] = row.get("gpu_peak_mb")
                if impl == "ours":
                    entry["speedup_vs_meta"] = {
                        section: _ratio(_get(ours, section, "images_per_s"), _get(meta, section, "images_per_s"))
                        for section in ("embed", "encoder_b1", "encoder_batch")
                    }
                encoder.append(entry)
            if ours is None and meta is None:
                continue
            decoder.append(
                {
                    "variant": variant,
                    "precision": precision,
                    "ours_p50_ms": _get(ours, "decoder", "median_ms"),
                    "ours_decode_only_p50_ms": _get(ours, "decoder_only", "median_ms"),
                    "meta_p50_ms": _get(meta, "decoder", "median_ms"),
                    "meta_over_ours": _ratio(_get(meta, "decoder", "median_ms"), _get(ours, "decoder", "median_ms")),
                    "iou_ours_vs_meta": ious["ours_vs_meta"].get(f"{variant}/{precision}"),
                    "note": (meta or {}).get("decoder_note"),
                }
            )
    problems = [
        {
            "name": w.get("name"),
            "status": w.get("status"),
            "detail": str(w.get("reason") or w.get("error") or "").splitlines()[0][:300]
            if (w.get("reason") or w.get("error"))
            else "",
        }
        for w in results.get("workers", [])
        if w.get("status") != "ok"
    ]
    problems += [
        {"name": f"{w['name']} {row['precision']}", "status": "failed", "detail": row["error"].splitlines()[0][:300]}
        for w in _ok_gpu_workers(results)
        for row in w.get("rows", [])
        if "error" in row
    ]
    problems += [
        {
            "name": name,
            "status": "skipped",
            "detail": "no checkpoint"
            if name.endswith("(no checkpoint)")
            else "not started: the run's deadline had passed",
        }
        for name in results.get("skipped", [])
    ]
    problems += [
        {"name": name, "status": "interrupted", "detail": "the run was stopped (signal) before it finished"}
        for name in results.get("interrupted", [])
    ]
    return {"encoder": encoder, "decoder": decoder, "ious": ious, "problems": problems}


def _rate(value: float | None) -> str:
    """images/s: two decimals below 10 (CPU smoke runs), one above."""
    return "–" if value is None else f"{value:.2f}" if value < 10 else fmt(value)


def _iou_cell(value: dict[str, float] | None) -> str:
    return "–" if not value else f"{value['mean']:.3f} / {value['min']:.3f}"


def _speedups(value: dict[str, float | None] | None) -> str:
    if not value:
        return ""
    return " / ".join("–" if v is None else f"{v:.2f}×" for v in value.values())


def _machine(results: dict[str, Any]) -> list[str]:
    env = results.get("environment") or {}
    machine = results.get("machine") or {}
    plan = results["plan"]
    tf32 = None if not env else f"matmul {fmt(env.get('tf32_matmul'))}, cuDNN {fmt(env.get('tf32_cudnn'))}"
    rows = [
        ["device", f"{results.get('device')}: {env.get('device_name', '–')}"],
        ["torch / CUDA / cuDNN", f"{env.get('torch', '–')} / {fmt(env.get('cuda'))} / {fmt(env.get('cudnn'))}"],
        ["transformers", env.get("transformers", "–")],
        ["CPU", f"{machine.get('cpu_model', '–')} ({fmt(machine.get('usable_cpus'))} usable cores)"],
        ["TF32", tf32],
        [
            "plan",
            f"{plan['mode']}: {', '.join(plan['variants'])}; {', '.join(plan['precisions'])}; batch {plan['batch']}",
        ],
        ["run", f"{results.get('started_at', '–')}, {fmt(results.get('wall_s'))} s"],
        ["command", f"`{results.get('command', '')}`"],
    ]
    return table(["", ""], rows)


def render_gpu_markdown(results: dict[str, Any], derived: dict[str, Any]) -> str:
    """``results.md``: the machine, the encoder and decoder tables, notes and whatever did not run."""
    env = results.get("environment") or {}
    batch = results["plan"]["batch"]
    lines = [f"# GPU benchmark: {env.get('device_name') or results.get('device')}", "", *_machine(results)]
    lines += [f"## Encoder (median ms; images/s at the median; batch {batch} on the module)", ""]
    header = [
        "Variant",
        "Precision",
        "Implementation",
        "embed ms",
        "embed img/s",
        "encoder b1 ms",
        "b1 img/s",
        f"encoder b{batch} ms",
        f"b{batch} img/s",
        "mask IoU vs fp32 (mean / min)",
        "GPU peak MiB",
        f"ours ÷ Meta img/s (embed / b1 / b{batch})",
    ]
    rows = [
        [
            e["variant"],
            e["precision"],
            _LABELS[e["implementation"]],
            e["embed_ms"],
            _rate(e["embed_images_per_s"]),
            e["encoder_b1_ms"],
            _rate(e["encoder_b1_images_per_s"]),
            e["encoder_batch_ms"],
            _rate(e["encoder_batch_images_per_s"]),
            _iou_cell(e["iou_vs_fp32"]) if e["precision"] != "fp32" else "(reference)",
            e["gpu_peak_mb"],
            _speedups(e.get("speedup_vs_meta")),
        ]
        for e in derived["encoder"]
    ]
    lines += table(header, rows)
    lines += ["## Decoder: one box prompt to a full-size mask on the host (p50 ms)", ""]
    header = [
        "Variant",
        "Precision",
        "ours segment()",
        "ours decode only",
        "Meta predict()",
        "Meta ÷ ours",
        "mask IoU ours vs Meta (mean / min)",
    ]
    rows = [
        [
            d["variant"],
            d["precision"],
            d["ours_p50_ms"],
            d["ours_decode_only_p50_ms"],
            d["meta_p50_ms"],
            None if d["meta_over_ours"] is None else f"{d['meta_over_ours']:.2f}×",
            _iou_cell(d["iou_ours_vs_meta"]),
        ]
        for d in derived["decoder"]
    ]
    lines += table(header, rows)
    notes = [f"{d['variant']} {d['precision']}: {d['note']}" for d in derived["decoder"] if d.get("note")]
    if notes:
        lines += ["Decoder notes:", "", *[f"- {note}" for note in notes], ""]
    lines += ["## Notes", "", *[f"- {note}" for note in NOTES], ""]
    if derived["problems"]:
        lines += ["## Not run or failed", ""]
        lines += table(
            ["Worker", "Status", "Detail"], [[p["name"], p["status"], p["detail"]] for p in derived["problems"]]
        )
    return "\n".join(lines).rstrip() + "\n"


def write_gpu_report(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``results.json`` (raw + derived) and ``results.md`` into ``out_dir``; returns their paths."""
    return write_results(results, out_dir, analyse_gpu, render_gpu_markdown)


if __name__ == "__main__":
    rewrite_from_saved(sys.argv, Path("bench/results-gpu/results.json"), write_gpu_report)
