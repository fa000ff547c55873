"""A missing optional extra is a ModelLoadError / ConfigError naming the install line, never a raw ImportError.

Each case runs in a fresh interpreter where the extra's module is hidden (``sys.modules[name] = None`` makes
``import name`` raise ImportError, which is what an uninstalled package looks like).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from perceptra_seg.extras import PROJECT_URL

_PRELUDE = """
import json, sys
sys.modules[{module!r}] = None
def report(exc):
    print(json.dumps({{"types": [c.__name__ for c in type(exc).__mro__], "message": str(exc)}}))
"""

_CASES = {
    # extra: (hidden module, code that needs the extra, expected error type)
    "torch": (
        "torch",
        "from perceptra_seg import Segmentor\nSegmentor(model='sam_v1', device='cpu')",
        "ModelLoadError",
    ),
    "onnx": (
        "onnxruntime",
        "from perceptra_seg import Segmentor\nSegmentor(backend='onnx', device='cpu')",
        "ModelLoadError",
    ),
    "server": ("fastapi", "from perceptra_seg.service import create_app", "ConfigError"),
    "cli": ("typer", "import perceptra_seg.cli\nperceptra_seg.cli.app", "ConfigError"),
}


def _run(module: str, body: str) -> subprocess.CompletedProcess[str]:
    code = _PRELUDE.format(module=module) + "try:\n" + textwrap.indent(body, "    ")
    code += "\nexcept Exception as exc:\n    report(exc)\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("extra", sorted(_CASES))
def test_missing_extra_names_the_install_line(extra: str) -> None:
    module, body, expected = _CASES[extra]
    run = _run(module, body)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert expected in report["types"] and "SegmentorError" in report["types"], report
    assert f'pip install "perceptra-seg[{extra}] @ git+{PROJECT_URL}"' in report["message"]
    assert f'pip install ".[{extra}]"' in report["message"] and repr(module) in report["message"]


def test_cli_entry_point_without_typer_exits_2_with_the_install_line() -> None:
    run = _run("typer", "from perceptra_seg.cli import main\nmain()")
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith("error: segmentor-cli (Typer and rich) needs the 'cli' extra")
    assert f"git+{PROJECT_URL}" in run.stderr and "Traceback" not in run.stderr
