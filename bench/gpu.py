"""The GPU benchmark: ``python -m bench.gpu --device cuda --out DIR`` (``bench/gpu.sh`` wraps it).

Per variant (smallest first): the random-weight Meta checkpoint (``bench.worker`` kind ``checkpoint``), then one
worker for ours and one for Meta's predictor (kinds ``gpu-ours`` / ``gpu-meta``, see ``bench/gpu_rows.py``), each
measuring every precision. ``results.json`` and ``results.md`` are rewritten after every worker, so a run cut short
still leaves the rows it finished; no worker starts once ``--deadline-s`` has passed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

from .gpu_plan import PRECISIONS, GpuPlan, make_gpu_plan
from .gpu_report import gpu_rows_by_key, mask_ious, write_gpu_report
from .models import VARIANTS
from .plan import make_plan
from .report import machine_info
from .run import REPO_ROOT, Runner

__all__ = ["main"]


class Deadline:
    """No new worker after ``seconds`` (0: none) from the start."""

    def __init__(self, seconds: float, clock: Any = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.start = clock()

    def passed(self) -> bool:
        return bool(self.seconds) and self.clock() - self.start >= self.seconds


def _environment(workers: list[dict[str, Any]]) -> dict[str, Any] | None:
    for worker in workers:
        if worker.get("environment"):
            env: dict[str, Any] = worker["environment"]
            return env
    return None


def summary_lines(result: dict[str, Any]) -> list[str]:
    """One progress line per precision of a GPU worker's result (the run's log stays useful if it is cut short)."""
    lines = []
    for row in result.get("rows", []):
        if "error" in row:
            lines.append(f"{row['precision']}: {row['error'].splitlines()[0][:160]}")
            continue
        parts = [
            f"{name} {row[key]['median_ms']:.2f} ms ({row[key]['images_per_s']:.2f} img/s)"
            for name, key in (
                ("embed", "embed"),
                ("b1", "encoder_b1"),
                (f"b{row['encoder_batch']['batch']}", "encoder_batch"),
            )
        ]
        parts.append(f"decoder p50 {row['decoder']['median_ms']:.2f} ms")
        lines.append(f"{row['precision']}: " + ", ".join(parts))
    return lines


def run_gpu_suite(
    plan: GpuPlan, out_dir: Path, work_dir: Path, device: str, deadline: Deadline, command: str
) -> dict[str, Any]:
    """Run every planned worker, rewriting the report after each one; returns the results document."""
    # the worker reads the base plan's fields it shares (none of its sections run); the time limit is ours
    base = dataclasses.replace(make_plan(quick=True, variants=plan.variants), worker_timeout_s=plan.worker_timeout_s)
    runner = Runner(base, work_dir, device)
    results: dict[str, Any] = {
        "schema": "gpu-1",
        "mode": plan.mode,
        "device": device,
        "command": command,
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "plan": plan.as_dict(),
        "machine": machine_info(),
        "workers": runner.results,
        "skipped": [],
    }

    def write() -> None:
        results["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        results["wall_s"] = round(time.monotonic() - runner.started, 1)
        results["environment"] = _environment(runner.results)
        results["ious"] = mask_ious(gpu_rows_by_key(results))
        write_gpu_report(results, out_dir)

    steps = [(kind, variant) for variant in plan.variants for kind in ("checkpoint", "gpu-ours", "gpu-meta")]
    checkpoints: dict[str, str] = {}
    done = 0
    try:
        for kind, variant in steps:
            if deadline.passed():
                results["skipped"].append(f"{kind}_{variant}")
            elif kind != "checkpoint" and variant not in checkpoints:
                results["skipped"].append(f"{kind}_{variant} (no checkpoint)")
            elif kind == "checkpoint":
                result = runner.run(kind, variant)
                if result["status"] == "ok":
                    checkpoints[variant] = result["checkpoint"]
            else:
                result = runner.run(kind, variant, checkpoint=checkpoints[variant], gpu_plan=plan.as_dict())
                for line in summary_lines(result):
                    print(f"    {line}", file=sys.stderr, flush=True)
            done += 1
            write()
    except BaseException:
        # stopped from outside (SIGTERM from `timeout`, Ctrl-C): the running worker and the rest did not finish
        results["interrupted"] = [f"{kind}_{variant}" for kind, variant in steps[done:]]
        raise
    finally:
        write()
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="device of every row")
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: vit_b + hiera_tiny, 1 repeat, batch 2")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results-gpu", help="results directory")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "perceptra-gpubench",
        help="checkpoints (vit_h: 2.4 GiB), masks, logs; kept out of --out, reused by later runs",
    )
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="override the plan's variants")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=list(PRECISIONS),
        help="override the plan's precisions (fp32 always runs: the IoU reference)",
    )
    parser.add_argument("--batch", type=int, default=None, help="batch of the batched encoder row (8; quick: 2)")
    parser.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help="start no worker after this many seconds (default 360; quick: none; 0: none)",
    )
    return parser.parse_args(argv)


def _terminate(*_: Any) -> NoReturn:
    # `timeout` sends SIGTERM: unwind, so the running worker is stopped and the report is written
    raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_gpu_plan(quick=args.quick, variants=args.variants, precisions=args.precisions, batch=args.batch)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("--device cuda: torch sees no CUDA device", file=sys.stderr)
            return 2
    deadline_s = args.deadline_s if args.deadline_s is not None else (0.0 if args.quick else 360.0)
    out_dir: Path = args.out.resolve()
    work_dir: Path = args.work_dir.resolve()
    signal.signal(signal.SIGTERM, _terminate)
    command = " ".join(["python -m bench.gpu", *(argv if argv is not None else sys.argv[1:])])
    results = run_gpu_suite(plan, out_dir, work_dir, args.device, Deadline(deadline_s), command)
    print((out_dir / "results.md").read_text(), flush=True)
    print(f"wrote {out_dir / 'results.json'} and {out_dir / 'results.md'}", file=sys.stderr)
    bad = [w["name"] for w in results["workers"] if w.get("status") == "failed"] + results["skipped"]
    if bad:
        print(f"failed or skipped: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
