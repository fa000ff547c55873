"""``info``, ``config show``, ``download`` and ``serve``: the environment, the configuration, weights, the service."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
import yaml

from perceptra_seg import hardware
from perceptra_seg.backends.precision import (
    auto_reason,
    decide_openvino_auto,
    local_fingerprint,
    resolve_onnx_auto,
    resolve_torch_precision,
)
from perceptra_seg.config import SegmentorConfig
from perceptra_seg.exceptions import ConfigError, ModelLoadError, SegmentorError
from perceptra_seg.extras import missing_extra
from perceptra_seg.registry import get_model_spec, list_models
from perceptra_seg.weights import default_cache_dir, resolve_checkpoint

from .common import CommonOptions, command, emit_json, log_level
from .progress import download_bar

__all__ = ["SERVICE_APP", "register"]

#: Where ``serve`` runs the service.
Engine = Literal["uvicorn", "ray"]

#: The ASGI application ``serve`` runs; it reads its configuration file from ``SEGMENTOR_CONFIG``.
SERVICE_APP = "perceptra_seg.service.main:app"

# Command-line flags passed to the service as the environment variables SegmentorConfig reads.
_FLAG_ENV = {
    "backend": "SEGMENTOR_RUNTIME_BACKEND",
    "model": "SEGMENTOR_MODEL_NAME",
    "variant": "SEGMENTOR_MODEL_VARIANT",
    "checkpoint": "SEGMENTOR_MODEL_CHECKPOINT_PATH",
    "device": "SEGMENTOR_RUNTIME_DEVICE",
    "precision": "SEGMENTOR_RUNTIME_PRECISION",
}


def register(app: typer.Typer) -> None:
    """Add ``info``, ``download``, ``serve`` and the ``config`` group to ``app``."""
    command(app, "info")(info)
    command(app, "download")(download)
    command(app, "serve", own_logging=False)(serve)
    config_app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)
    command(config_app, "show")(config_show)
    app.add_typer(config_app, name="config")


def info(opts: CommonOptions) -> None:
    """Device, CPU features, the precision ``auto`` picks, backends, checkpoint cache and the configuration."""
    config = opts.load_config()
    cache_dir = Path(config.model.cache_dir).expanduser() if config.model.cache_dir else default_cache_dir()
    cached = sorted({spec.filename for spec in list_models() if (cache_dir / spec.filename).is_file()})
    device, backends, settings = _device_info(config.runtime.device), _backends(), config.model_dump(mode="json")
    version, python = _version("perceptra-seg"), sys.version.split()[0]
    cpu = hardware.cpu_features().as_dict()
    precision = _precision_info(config, device)
    if opts.json:
        emit_json(
            {
                "version": version,
                "python": python,
                "device": device,
                "cpu": cpu,
                "precision": precision,
                "backends": backends,
                "cache_dir": str(cache_dir),
                "cached_checkpoints": cached,
                "models": _catalogue(),
                "config": settings,
            }
        )
        return
    selected = device["selected"] or f"unavailable: {device['error']}"
    typer.echo(f"perceptra-seg {version} (Python {python})")
    typer.echo(f"device:   {selected} (requested {device['requested']})")
    flags = ", ".join(hardware.cpu_features().names()) or "none detected"
    typer.echo(f"cpu:      {cpu['model'] or 'unknown model'}; features: {flags} (from {cpu['source']})")
    typer.echo(f"precision: {precision['requested']} -> {precision['resolved']} ({precision['reason']})")
    for name, backend in backends.items():
        detail = ", ".join(f"{k} {v}" for k, v in backend.items() if k != "available" and v)
        typer.echo(f"backend:  {name}: {'available' if backend['available'] else 'not installed'} {detail}".rstrip())
    typer.echo(f"cache:    {cache_dir} ({', '.join(cached) if cached else 'no checkpoints cached'})")
    variants: dict[str, list[str]] = {}
    for entry in _catalogue():
        variants.setdefault(entry["model"], []).append(entry["variant"])
    typer.echo("models:   " + "; ".join(f"{name}: {', '.join(names)}" for name, names in variants.items()))
    typer.echo("config:")
    typer.echo(_indent(yaml.safe_dump(settings, sort_keys=False)))


def _catalogue() -> list[dict[str, str]]:
    """Every catalogue entry: model, variant, checkpoint file, download URL, hub id, licence and source."""
    return [
        {
            "model": spec.name,
            "variant": spec.variant,
            "file": spec.filename,
            "url": spec.url,
            "hub_id": spec.hub_id,
            "licence": spec.licence,
            "source": spec.source,
        }
        for spec in list_models()
    ]


def config_show(opts: CommonOptions) -> None:
    """Print the effective configuration (defaults < YAML < SEGMENTOR_* environment < flags) as YAML, or JSON."""
    data = opts.load_config().model_dump(mode="json")
    if opts.json:
        emit_json(data)
    else:
        typer.echo(yaml.safe_dump(data, sort_keys=False), nl=False)


def download(
    opts: CommonOptions,
    force: Annotated[
        bool, typer.Option("--force", help="Download Meta's file again even when cached (replaces a corrupt one).")
    ] = False,
) -> None:
    """Prefetch the weights of --model/--variant (Meta's file into the cache dir, or a hub id's files).

    A progress bar is drawn on stderr when it is a terminal (not with --json).
    """
    config = opts.load_config()
    model = config.model
    spec = get_model_spec(model.name, model.variant)
    cache_dir = Path(model.cache_dir).expanduser() if model.cache_dir else default_cache_dir()
    # a packaged model (the offline demo) is never fetched: it counts as present
    was_cached = model.checkpoint_path is None and (spec.packaged or (cache_dir / spec.filename).is_file())
    refetch = force and model.checkpoint_path is None and not spec.packaged
    level = logging.WARNING if opts.json else logging.INFO
    with log_level("perceptra_seg.weights", level), download_bar(enabled=not opts.json):
        source = resolve_checkpoint(
            spec,
            model.checkpoint_path,
            cache_dir=cache_dir,
            offline=model.offline,
            download_base_url=model.download_base_url,
            timeout_s=model.download_timeout_s,
            force=refetch,
        )
    location = _fetch_hub(source.location) if source.kind == "hub" else source.location
    data = {
        "model": spec.name,
        "variant": spec.variant,
        "kind": source.kind,
        "path": location,
        "fingerprint": source.fingerprint,
        "downloaded": source.kind == "hub" or refetch or (model.checkpoint_path is None and not was_cached),
    }
    if opts.json:
        emit_json(data)
    else:
        state = "downloaded" if data["downloaded"] else "already present"
        typer.echo(f"{spec.name}/{spec.variant}: {state}: {location}")


def serve(
    opts: CommonOptions,
    host: Annotated[str | None, typer.Option("--host", help="Interface to bind (default: server.host).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="TCP port (default: server.port).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes (each loads the model).")] = 1,
    engine: Annotated[
        Engine, typer.Option("--engine", help="uvicorn: this machine; ray: replicas on Ray Serve (the [ray] extra).")
    ] = "uvicorn",
    replicas: Annotated[
        int | None,
        typer.Option(
            "--replicas",
            min=1,
            help="--engine ray: this many replicas (default: server.ray_min_replicas..ray_max_replicas autoscaling, "
            "or one per --gpus-per-replica GPUs).",
        ),
    ] = None,
    gpus_per_replica: Annotated[
        float, typer.Option("--gpus-per-replica", min=0, help="--engine ray: GPUs each replica reserves.")
    ] = 0.0,
    cpus_per_replica: Annotated[
        float, typer.Option("--cpus-per-replica", min=0, help="--engine ray: CPUs each replica reserves.")
    ] = 1.0,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address", help="--engine ray: auto or HOST:PORT of a running cluster (default: start a local one)."
        ),
    ] = None,
) -> None:
    """Run the REST service with uvicorn (the config file reaches it through SEGMENTOR_CONFIG), or on Ray Serve.

    With --engine ray the same app runs as Ray Serve replicas behind Ray's HTTP proxy on --host/--port; use
    server.state: redis so that replicas share image ids and rate limits. Stops on Ctrl-C or SIGTERM.
    """
    config = opts.load_config()  # fail here, with exit code 2, rather than inside a worker
    if engine == "ray":
        if workers != 1:
            raise ConfigError("--workers is for --engine uvicorn; with --engine ray use --replicas")
        _serve_ray(config, host, port, replicas, gpus_per_replica, cpus_per_replica, ray_address)
        return
    ray_flags = {
        "--replicas": replicas is not None,
        "--gpus-per-replica": gpus_per_replica != 0.0,
        "--cpus-per-replica": cpus_per_replica != 1.0,
        "--ray-address": ray_address is not None,
    }
    given = [flag for flag, used in ray_flags.items() if used]
    if given:
        raise ConfigError(f"{', '.join(given)}: for --engine ray only")
    try:
        import uvicorn
    except ImportError as exc:
        raise missing_extra("server", exc) from None
    if importlib.util.find_spec("perceptra_seg.service") is None:
        raise SegmentorError("this installation has no perceptra_seg.service package")
    os.environ.update(service_environment(opts))
    from ..service.connections import uvicorn_options  # header deadline, keep-alive, connection cap, header size

    uvicorn.run(
        SERVICE_APP,
        host=host if host is not None else config.server.host,
        port=port if port is not None else config.server.port,
        workers=workers,
        factory=False,
        log_config=None,  # the service configures logging itself (logging section)
        **uvicorn_options(config),
    )


def _serve_ray(
    config: SegmentorConfig,
    host: str | None,
    port: int | None,
    replicas: int | None,
    gpus_per_replica: float,
    cpus_per_replica: float,
    ray_address: str | None,
) -> None:
    """``serve --engine ray``: the effective configuration (flags included) goes to every replica by value."""
    from perceptra_seg.serving_ray import import_ray, serve_on_ray

    import_ray()  # the install hint before anything starts
    bind = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    if bind:
        config = config.model_copy(update={"server": config.server.model_copy(update=bind)})
    serve_on_ray(
        config,
        address=ray_address,
        replicas=replicas,
        gpus_per_replica=gpus_per_replica,
        cpus_per_replica=cpus_per_replica,
        on_ready=lambda line: typer.echo(line, err=True),
    )


def service_environment(opts: CommonOptions) -> dict[str, str]:
    """Environment variables that carry ``--config`` and the model/runtime flags into the service process."""
    env = {}
    if opts.config is not None:
        env["SEGMENTOR_CONFIG"] = str(opts.config.expanduser().resolve())
    for flag, name in _FLAG_ENV.items():
        value = getattr(opts, flag)
        if value is not None:
            env[name] = str(value)
    return env


def _fetch_hub(repo_id: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        return str(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as exc:  # huggingface_hub raises many types (offline, 404, auth, network)
        raise ModelLoadError(f"cannot fetch {repo_id} from the Hugging Face hub: {exc}") from None


def _device_info(requested: str) -> dict[str, Any]:
    info: dict[str, Any] = {"requested": requested, "selected": None, "error": None, "cuda_available": False}
    if importlib.util.find_spec("torch") is None:
        info["error"] = "torch is not installed"
        return info
    import torch

    from perceptra_seg.backends.torch_backend import resolve_device

    info["cuda_available"] = bool(torch.cuda.is_available())
    if info["cuda_available"]:
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    try:
        selected = resolve_device(requested)
        info["selected"] = str(selected)
        if selected.type == "cuda":
            info["cuda_capability"] = list(torch.cuda.get_device_capability(selected))
    except ConfigError as exc:
        info["error"] = str(exc)
    return info


def _precision_info(config: SegmentorConfig, device: dict[str, Any]) -> dict[str, Any]:
    """``runtime.precision`` as configured and as the configured backend would run it on this machine."""
    requested = config.runtime.precision
    spec = get_model_spec(config.model.name, config.model.variant)
    if config.runtime.backend == "onnx":
        if config.onnx.quantize == "int8":
            resolved, reason = "int8", "onnx.quantize is int8"
        elif requested != "auto":
            resolved, reason = requested, "as configured"
        else:
            where = config.onnx.model_dir or "the cache"
            try:
                resolved = resolve_onnx_auto(config, spec, local_fingerprint(config, spec))
                reason = f"the precision of the export in {where} (fp32 when there is none yet)"
            except (SegmentorError, OSError, ValueError, KeyError) as exc:  # the backend will say the same, louder
                resolved, reason = "unknown", f"cannot read the export in {where}: {exc}"
        return {"requested": requested, "resolved": resolved, "reason": reason}
    if config.runtime.backend == "openvino":
        if requested == "auto":
            resolved, reason = decide_openvino_auto(spec.family, spec.precision_key, bool(config.model.architecture))
        else:
            resolved, reason = requested, "as configured"
        return {"requested": requested, "resolved": resolved, "reason": reason}
    if config.runtime.backend == "triton":
        return {"requested": requested, "resolved": "server", "reason": "backend triton: serve-triton decides"}
    selected = str(device.get("selected") or "cpu")
    device_type = "cuda" if selected.startswith("cuda") else "cpu"
    capability = tuple(device["cuda_capability"]) if device_type == "cuda" and device.get("cuda_capability") else None
    custom = bool(config.model.architecture)
    resolved = resolve_torch_precision(
        requested,
        device_type=device_type,
        family=spec.family,
        variant=spec.precision_key,
        custom_architecture=custom,
        cuda_capability=capability,
    )
    reason = (
        auto_reason(device_type, spec.family, spec.precision_key, custom) if requested == "auto" else "as configured"
    )
    return {"requested": requested, "resolved": resolved, "reason": reason}


def _backends() -> dict[str, dict[str, Any]]:
    torch_ok = all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers"))
    backends: dict[str, dict[str, Any]] = {
        "torch": {"available": torch_ok, "version": _version("torch") if torch_ok else None},
    }
    onnx: dict[str, Any] = {"available": importlib.util.find_spec("onnxruntime") is not None}
    if onnx["available"]:
        import onnxruntime

        onnx["version"] = _version("onnxruntime")
        onnx["providers"] = list(onnxruntime.get_available_providers())
    backends["onnx"] = onnx
    openvino_ok = onnx["available"] and importlib.util.find_spec("openvino") is not None
    backends["openvino"] = {"available": openvino_ok, "version": _version("openvino") if openvino_ok else None}
    return backends


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.rstrip().splitlines())
