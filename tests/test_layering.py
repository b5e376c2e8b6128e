"""The split the design depends on: engine/ never imports textual; the TUI's import path
never pulls in torch, transformers or shap (first paint must not wait for them)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_engine_source_never_imports_textual() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "engine").rglob("*.py")
                 if re.search(r"^\s*(import textual|from textual)\b", p.read_text(), re.M)]
    assert offenders == []


def test_importing_every_engine_module_loads_no_textual() -> None:
    mods = sorted(p.stem for p in (ROOT / "engine").glob("*.py") if p.stem != "__init__")
    code = ("import importlib, sys\n"
            f"for m in {mods!r}:\n    importlib.import_module('engine.' + m)\n"
            "print(sorted(k for k in sys.modules if k == 'textual' or k.startswith('textual.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_tui_source_has_no_module_level_heavy_imports() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "tui").rglob("*.py")
                 if re.search(r"^(import|from) (torch|transformers|shap)\b", p.read_text(), re.M)]
    assert offenders == []
