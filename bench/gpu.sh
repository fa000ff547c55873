#!/usr/bin/env bash
# GPU benchmark: ours vs Meta's predictors, encoder (batch 1 and 8) and one-prompt decoder, fp32 / fp16 / bf16.
#
#   bash bench/gpu.sh --device cuda --out "$OUT"      # on the GPU machine (~5 minutes on one H200)
#   bash bench/gpu.sh --device cpu --quick            # smoke test here: vit_b + hiera_tiny, batch 2
#
# Every argument goes to `python -m bench.gpu` (see bench/README.md, "GPU run"). Nothing is downloaded: packages
# missing from the Python used (our runtime dependencies, segment-anything, sam2 and theirs) are installed from the
# wheels in ./.whl (or $GPUBENCH_WHEELS) into $GPUBENCH_SITE (default /tmp/site) with pip --no-index, and only
# when an import fails. Python: $PYTHON, else python3 if it has torch, else the main checkout's .venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"   # every model is a local file: never wait on a network that is not there
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if python3 -c "import torch" 2>/dev/null; then
    python=python3
  else
    common="$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)"
    python="${common:+${common%/.git}/.venv/bin/python}"
    [[ -n "$python" && -x "$python" ]] || { echo "gpu.sh: no Python with torch (set PYTHON=...)" >&2; exit 2; }
  fi
fi

# found, not imported: Meta's packages import torchvision, which CPU machines here lack (bench/models.py)
needed="import importlib.util as u, sys
missing = [m for m in sys.argv[1:] if u.find_spec(m) is None]
sys.exit('missing: ' + ' '.join(missing) if missing else 0)"
modules=(pydantic pydantic_settings dotenv platformdirs pycocotools shapely segment_anything sam2 hydra omegaconf iopath)
if ! "$python" -c "$needed" "${modules[@]}" 2>/dev/null; then
  wheels="${GPUBENCH_WHEELS:-$root/.whl}"
  site="${GPUBENCH_SITE:-/tmp/site}"
  shopt -s nullglob
  files=("$wheels"/*.whl)
  [[ ${#files[@]} -gt 0 ]] || { echo "gpu.sh: missing packages and no wheels in $wheels" >&2; exit 2; }
  echo "gpu.sh: installing ${#files[@]} wheels from $wheels into $site" >&2
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "${files[@]}"
  export PYTHONPATH="$site:$PYTHONPATH"
  "$python" -c "$needed" "${modules[@]}"
fi

echo "gpu.sh: $("$python" -c 'import sys, torch; print(sys.executable, "torch", torch.__version__)')" >&2
exec "$python" -m bench.gpu "$@"
