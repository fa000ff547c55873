"""Run the benchmark suite: ``python -m bench.run [--quick] [--out bench/results]``.

Order of work (each step a separate ``python -m bench.worker`` process, see ``bench/worker.py``):

1. calibration: matmul GFLOP/s of this machine (fp32, bf16) and the encoder FLOPs of every variant;
2. per variant: the random-weight Meta checkpoint (built once, reused from the work directory), and when ONNX rows
   are planned, its fp32 ONNX export and INT8 conversion (also reused while the checkpoint is unchanged);
3. per variant: our runtimes (torch fp32 / bf16, ONNX fp32 / INT8), Meta's predictor, transformers' processor + model;
4. the REST rows; 5. the calibration again (how much the machine's speed drifted during the run).

Results: ``<out>/results.json`` (everything, raw samples included) and ``<out>/results.md`` (the tables).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .agreement import mask_agreement
from .models import RUNTIMES, VARIANTS, clean_environment
from .plan import SECTIONS, Plan, make_plan
from .report import machine_info, write_report

__all__ = ["main"]

REPO_ROOT = Path(__file__).resolve().parent.parent


class Runner:
    """Starts workers one at a time, with a time limit each, and keeps every result."""

    def __init__(self, plan: Plan, work_dir: Path, device: str) -> None:
        self.plan = plan
        self.work_dir = work_dir
        self.device = device
        self.results: list[dict[str, Any]] = []
        self.started = time.monotonic()
        (work_dir / "tasks").mkdir(parents=True, exist_ok=True)
        (work_dir / "logs").mkdir(parents=True, exist_ok=True)

    def run(self, kind: str, variant: str | None = None, runtime: str | None = None, **extra: Any) -> dict[str, Any]:
        name = "_".join(part for part in (kind, variant, runtime, extra.pop("tag", None)) if part)
        task = {
            "kind": kind,
            "variant": variant,
            "runtime": runtime,
            "device": self.device,
            "work_dir": str(self.work_dir),
            "plan": self.plan.as_dict(),
            "result_path": str(self.work_dir / "tasks" / f"{name}.result.json"),
            **extra,
        }
        task_path = self.work_dir / "tasks" / f"{name}.json"
        task_path.write_text(json.dumps(task, indent=2))
        Path(task["result_path"]).unlink(missing_ok=True)
        log_path = self.work_dir / "logs" / f"{name}.log"
        self._say(f"{name} ...")
        start = time.monotonic()
        returncode = self._spawn(task_path, log_path)
        result = self._read(Path(task["result_path"]), task, returncode, log_path)
        result["name"] = name
        self.results.append(result)
        detail = result.get("reason") or result.get("error") or ""
        self._say(f"{name}: {result['status']} in {time.monotonic() - start:.1f} s {detail[:200]}")
        return result

    def _spawn(self, task_path: Path, log_path: Path) -> int | None:
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.worker", str(task_path)],
                cwd=REPO_ROOT,
                env=clean_environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                return process.wait(timeout=self.plan.worker_timeout_s)
            except subprocess.TimeoutExpired:
                # SIGTERM first: the worker unwinds (the REST worker stops its server), then SIGKILL
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                return None
            except BaseException:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:  # stuck in native code: do not leave it running
                    process.kill()
                    process.wait()
                raise

    def _read(self, path: Path, task: dict[str, Any], returncode: int | None, log_path: Path) -> dict[str, Any]:
        base = {key: task.get(key) for key in ("kind", "variant", "runtime")}
        if returncode is None:
            return {**base, "status": "failed", "error": f"timed out after {self.plan.worker_timeout_s:.0f} s"}
        try:
            result: dict[str, Any] = json.loads(path.read_text())
            return result
        except (OSError, ValueError):
            tail = log_path.read_text(errors="replace")[-1500:] if log_path.is_file() else ""
            return {**base, "status": "failed", "error": f"worker exited with {returncode} and no result: {tail}"}

    def _say(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:7.1f} s] {message}", file=sys.stderr, flush=True)


def _needs_ours(plan: Plan, variant: str, runtime: str) -> bool:
    sections = plan.sections
    return (
        "encoder" in sections
        or "interactive" in sections
        or ("seed" in sections and runtime == "torch-fp32" and variant in plan.seed_variants)
    )


def run_suite(plan: Plan, out_dir: Path, work_dir: Path, device: str) -> dict[str, Any]:
    """Run every planned worker and return the raw results document (see ``report.write_report``)."""
    runner = Runner(plan, work_dir, device)
    started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    load_start = os.getloadavg()
    calibration = {"start": runner.run("calibrate", tag="start")}
    checkpoints: dict[str, str] = {}
    needed = set(plan.variants) | ({*plan.rest_variants} if "rest" in plan.sections else set())
    for variant in [v for v in VARIANTS if v in needed]:
        result = runner.run("checkpoint", variant)
        if result["status"] == "ok":
            checkpoints[variant] = result["checkpoint"]
    onnx_ready: dict[str, str | None] = {}  # variant -> None when ready, else why not
    wants_onnx = any(r.startswith("onnx") for r in plan.runtimes) and {"encoder", "interactive"} & set(plan.sections)
    for variant in plan.variants:
        if variant not in checkpoints:
            continue
        if wants_onnx:
            export = runner.run("onnx-export", variant, checkpoint=checkpoints[variant])
            onnx_ready[variant] = None if export["status"] == "ok" else export.get("reason") or export.get("error")
        for runtime in plan.runtimes:
            if not _needs_ours(plan, variant, runtime):
                continue
            if runtime.startswith("onnx") and onnx_ready.get(variant) is not None:
                runner.results.append(
                    {
                        "kind": "ours",
                        "variant": variant,
                        "runtime": runtime,
                        "status": "unavailable",
                        "reason": f"ONNX export: {onnx_ready[variant]}",
                    }
                )
                continue
            runner.run("ours", variant, runtime, checkpoint=checkpoints[variant])
        if {"encoder", "interactive"} & set(plan.sections):
            runner.run("meta", variant, checkpoint=checkpoints[variant])
        if "encoder" in plan.sections:
            runner.run("transformers", variant, checkpoint=checkpoints[variant])
    if "rest" in plan.sections:
        for variant in plan.rest_variants:
            if variant in checkpoints:
                runner.run("rest", variant, checkpoint=checkpoints[variant])
    calibration["end"] = runner.run("calibrate", tag="end", flops=False)
    workers = [r for r in runner.results if r.get("kind") != "calibrate"]
    return {
        "schema": 1,
        "mode": plan.mode,
        "device": device,
        "started_at": started_at,
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(time.monotonic() - runner.started, 1),
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
        "plan": plan.as_dict(),
        "machine": machine_info(),
        "calibration": calibration,
        "workers": workers,
        "agreement": mask_agreement(workers),
        "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny repeat counts, vit_b + hiera_tiny")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results", help="results directory")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="checkpoints, ONNX exports, logs (default: <out>/work; reused between runs)",
    )
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="override the plan's variants")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), help="run only these sections")
    parser.add_argument("--runtimes", nargs="+", choices=list(RUNTIMES), help="run only these runtimes of ours")
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="device of every row (GPU rows come only from a run with --device cuda)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(quick=args.quick, variants=args.variants, sections=args.sections, runtimes=args.runtimes)
    out_dir: Path = args.out.resolve()
    work_dir: Path = (args.work_dir or out_dir / "work").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    results = run_suite(plan, out_dir, work_dir, args.device)
    paths = write_report(results, out_dir)
    print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    failed = [w["name"] for w in results["workers"] if w.get("status") == "failed"]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
