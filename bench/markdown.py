"""The Markdown rendering of a benchmark run (``results.md``): machine, one table per section, targets, gaps."""

from __future__ import annotations

from typing import Any

__all__ = ["render_markdown"]

_RUNTIME_LABELS = {
    "torch-fp32": "ours torch fp32",
    "onnx-fp32": "ours ONNX fp32",
    "torch-bf16": "ours torch bf16",
    "onnx-int8": "ours ONNX INT8",
}


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell: ``–`` for missing, ``yes``/``no`` for booleans, thousands separators for numbers."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _speedup(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _machine(results: dict[str, Any]) -> list[str]:
    machine = results.get("machine", {})
    versions = machine.get("versions", {})
    start = results.get("calibration", {}).get("start", {})
    end = results.get("calibration", {}).get("end", {})
    gf_start, gf_end = start.get("matmul_gflops") or {}, end.get("matmul_gflops") or {}
    device = results.get("device", "cpu")
    cuda = start.get("cuda_device")
    load = results.get("load_average", {})
    rows = [
        ["CPU", machine.get("cpu_model")],
        ["CPU features", ", ".join(machine.get("cpu_features", [])) or "–"],
        [
            "Logical CPUs (usable / threads used)",
            f"{machine.get('logical_cpus')} ({machine.get('usable_cpus')} / {start.get('torch_threads')})",
        ],
        ["RAM", f"{fmt(machine.get('ram_gib'))} GiB"],
        ["OS / Python", f"{machine.get('os')} / {machine.get('python')}"],
        ["Device of every row", f"{device}" + (f" ({cuda})" if cuda and device == "cuda" else "")],
        ["CUDA device present", cuda or "none"],
        ["fp32 matmul GFLOP/s (start → end of run)", f"{fmt(gf_start.get('float32'))} → {fmt(gf_end.get('float32'))}"],
        [
            "bf16 matmul GFLOP/s (start → end of run)",
            f"{fmt(gf_start.get('bfloat16'))} → {fmt(gf_end.get('bfloat16'))}",
        ],
        [
            "Load average 1/5/15 min (start → end)",
            f"{' '.join(fmt(x, 2) for x in load.get('start', []))} → {' '.join(fmt(x, 2) for x in load.get('end', []))}",
        ],
    ]
    rows += [[name, version or "not installed"] for name, version in versions.items()]
    return ["## Machine", "", *table(["", ""], rows)]


def _encoder(derived: dict[str, Any]) -> list[str]:
    lines = [
        "## Encoder latency (one image, 1024 input)",
        "",
        "Ours: `Segmentor.embed(image)`; Meta: `predictor.set_image(image)`; transformers: its processor + "
        "`get_image_embeddings`. Speedups > 1 mean ours is faster; × floor = median ÷ compute floor.",
        "",
    ]
    rows = [
        [
            r["variant"],
            r["implementation"],
            r.get("median_ms"),
            r.get("p95_ms"),
            r.get("n"),
            _speedup(r.get("speedup_vs_best_reference")),
            fmt(r.get("x_floor"), 2),
            _speedup(r.get("speedup_vs_torch_fp32")),
            f"{fmt(r.get('mean_iou'), 3)} / {fmt(r.get('min_iou'), 3)}" if "mean_iou" in r else "–",
            r.get("peak_rss_mb"),
            r.get("note", ""),
        ]
        for r in derived["encoder"]
    ]
    lines += table(
        [
            "Variant",
            "Implementation",
            "median ms",
            "p95 ms",
            "n",
            "vs best reference",
            "× floor",
            "vs ours torch fp32",
            "mask IoU vs fp32 (mean / min)",
            "peak RSS MiB",
            "note",
        ],
        rows,
    )
    floor_rows = [[v, f.get("gflop"), f.get("floor_ms")] for v, f in derived["floors"].items()]
    lines += [
        "Compute floor = encoder GFLOP (counted with torch's FlopCounterMode, attention included) ÷ the fp32 "
        "matmul GFLOP/s measured at the start of this run.",
        "",
    ]
    return lines + table(["Variant", "encoder GFLOP", "floor ms"], floor_rows)


def _interactive(derived: dict[str, Any]) -> list[str]:
    rows = derived["interactive"]
    if not rows:
        return []
    runtimes = [rt for rt in _RUNTIME_LABELS if any(f"{rt}_ms" in r for r in rows)]
    header = [
        "Variant",
        "Prompts",
        "Mode",
        *[f"{_RUNTIME_LABELS[rt]} ms/prompt" for rt in runtimes],
        *[f"of which decoder ({_RUNTIME_LABELS[rt]})" for rt in runtimes],
        "Meta ms/prompt",
        "Meta predict only ms/prompt",
        *[f"speedup {_RUNTIME_LABELS[rt]}" for rt in runtimes],
    ]
    body = [
        [
            r["variant"],
            r["prompts"],
            r["mode"],
            *[r.get(f"{rt}_ms") for rt in runtimes],
            *[r.get(f"{rt}_decoder_ms") for rt in runtimes],
            r["reference_ms"],
            r["reference_predict_only_ms"],
            *[_speedup(r.get(f"{rt}_speedup")) for rt in runtimes],
        ]
        for r in rows
    ]
    complexity = [
        f"{v}: {fmt(c.get('mean_polygons'))} polygons / {fmt(c.get('mean_vertices'), 0)} vertices per mask"
        for v, c in derived.get("mask_complexity", {}).items()
    ]
    return [
        "## Interactive path (image already encoded)",
        "",
        "Box prompts; every mask encoded as COCO RLE + polygons on both sides (Meta's masks through the same "
        "encoder functions). `single` = one call per prompt, `batch` = all prompts in one call. Encoding cost "
        "grows with mask complexity; masks of random-weight models are far more fragmented than real ones ("
        + ("; ".join(complexity) or "complexity not measured")
        + "), so the encoding share here is an upper "
        "bound.",
        "",
        *table(header, body),
    ]


def _decoder(derived: dict[str, Any]) -> list[str]:
    if not derived["decoder"]:
        return []
    rows = [
        [
            r["variant"],
            r["runtime"],
            r["decoder"]["median_ms"],
            r["cached_prompt"]["median_ms"],
            fmt(r.get("ratio"), 2),
            (r.get("cached_prompt_polygons") or {}).get("median_ms"),
        ]
        for r in derived["decoder"]
    ]
    return [
        "## One cached prompt vs the decoder alone",
        "",
        "`backend.decode` for one box (prompt encoder + mask decoder) against `Segmentor.segment(handle, box)` "
        "with RLE output (upsampling, threshold, encoding included); ratio = cached prompt ÷ decoder. The last "
        "column asks for RLE + polygons.",
        "",
        *table(
            [
                "Variant",
                "Runtime",
                "decoder ms",
                "cached prompt (RLE) ms",
                "ratio",
                "cached prompt (RLE + polygons) ms",
            ],
            rows,
        ),
    ]


def _seed(derived: dict[str, Any]) -> list[str]:
    if not derived["seed"]:
        return []
    rows = [
        [
            r["variant"],
            r["prompts"],
            r["baseline_ms"],
            r["ours_ms"],
            r["ours_batched_ms"],
            _speedup(r["speedup"]),
            _speedup(r["speedup_batched"]),
            " / ".join(str(r["encoder_calls"][k]) for k in ("baseline", "ours", "ours_batched")),
        ]
        for r in derived["seed"]
    ]
    return [
        "## Seed-style baseline: re-encode per call vs the embedding cache",
        "",
        "`segment(image, box)` once per prompt on the same image (RLE output), cache off (the seed's behaviour) "
        "vs cache on; "
        "one run each, encoder included.",
        "",
        *table(
            [
                "Variant",
                "Prompts",
                "re-encode per call ms",
                "ours ms",
                "ours, one call ms",
                "speedup",
                "speedup one call",
                "encoder calls (base / ours / one call)",
            ],
            rows,
        ),
    ]


def _rest(derived: dict[str, Any]) -> list[str]:
    if not derived["rest"]:
        return []
    rows, notes = [], []
    for r in derived["rest"]:
        for run in r["runs"]:
            rows.append(
                [
                    r["variant"],
                    run["concurrency"],
                    run["requests"],
                    run.get("requests_per_s"),
                    run.get("p50_ms"),
                    run.get("p95_ms"),
                    run.get("server_p50_ms"),
                    run.get("http_overhead_p50_ms"),
                    run.get("response_bytes_p50"),
                    run["errors"],
                ]
            )
        notes.append(
            f"- {r['variant']}: HTTP layer {fmt(r['http_overhead_ms'])} ms per request at 1 client (p50 of "
            f"client latency − server latency_ms). In-process `segment_from_box` p50 {fmt(r['sdk_p50_ms'])} "
            f"ms (client p50 − that: {fmt(r['client_minus_sdk_ms'])} ms, unpaired). Server peak RSS "
            f"{fmt(r['server_peak_rss_mb'])} MiB; start-up to ready {fmt(r['server_startup_s'])} s; embed "
            f"request {fmt(r['embed_ms'])} ms."
        )
    return [
        "## REST on loopback",
        "",
        "uvicorn process on 127.0.0.1; the image is embedded once, then `POST /v1/segment/box` by `image_id` "
        "(RLE output) from N client threads, bounded by request count and duration. HTTP ms = client latency − "
        "the server's own latency_ms, per request (with more than one client it includes the wait for the "
        "inference slot).",
        "",
        *table(
            [
                "Variant",
                "clients",
                "requests",
                "req/s",
                "p50 ms",
                "p95 ms",
                "server p50 ms",
                "HTTP p50 ms",
                "response bytes",
                "errors",
            ],
            rows,
        ),
        *notes,
        "",
    ]


def _memory(derived: dict[str, Any]) -> list[str]:
    if not derived["memory"]:
        return []
    rows = [[r["variant"], r["configuration"], r["peak_rss_mb"], r["rss_after_load_mb"]] for r in derived["memory"]]
    return [
        "## Peak memory",
        "",
        "Peak RSS (VmHWM) of each configuration's own process, model load included.",
        "",
        *table(["Variant", "Configuration", "peak RSS MiB", "RSS after load MiB"], rows),
    ]


def _targets(derived: dict[str, Any]) -> list[str]:
    rows = [
        [
            t["target"],
            fmt(t["value"], 2),
            fmt(float(t["threshold"]), 2),
            "met" if t["met"] else ("missed" if t["met"] is False else "not measured"),
            t["detail"],
        ]
        for t in derived["targets"]
    ]
    return ["## Targets", "", *table(["Target", "measured", "threshold", "result", "how"], rows)]


def _timing(derived: dict[str, Any]) -> list[str]:
    rows = [[t["name"], t["status"], t["wall_s"]] for t in derived.get("timing", [])]
    if not rows:
        return []
    return ["## Where the run's time went", "", *table(["Worker", "status", "wall s"], rows)]


def render_markdown(results: dict[str, Any], derived: dict[str, Any]) -> str:
    """The whole ``results.md``."""
    mode = results.get("mode", "full")
    lines = [
        f"# perceptra-seg benchmark results ({mode} run)",
        "",
        f"Run {results.get('started_at')} → {results.get('finished_at')} ({fmt(results.get('wall_s'))} s), "
        f"`{results.get('command', 'python -m bench.run')}`.",
        "",
    ]
    if mode == "quick":
        lines += [
            "> **Quick run**: one or two repetitions per row, fewer variants. The numbers show that every "
            "row runs, not how fast it runs; use a full run on a quiet machine for published figures.",
            "",
        ]
    lines += [
        "> Random-weight models (Meta's architectures, seeded) saved as Meta checkpoints: latency is that of "
        "real weights; mask agreement figures are for random weights.",
        "",
    ]
    for part in (
        _machine(results),
        _encoder(derived),
        _interactive(derived),
        _decoder(derived),
        _seed(derived),
        _rest(derived),
        _memory(derived),
        _targets(derived),
    ):
        lines += part
    lines += ["## Not measured / unavailable", ""]
    lines += [f"- {item}" for item in derived["unavailable"]] or ["- everything planned ran"]
    lines += [
        "",
        *_timing(derived),
        "## Reproduce",
        "",
        "```",
        "pip install -e '.[dev]'   # plus sam2 as in the Makefile",
        "python -m bench.run            # full run, ~25 min on 2 cores",
        "python -m bench.run --quick    # smoke run",
        "```",
        "",
    ]
    return "\n".join(lines)
