"""Zoo builds under SIGKILL: a half-written model folder is never used.

The CI version kills a tiny teacher+student build once; the full version is
`.venv/bin/python bench/crash_harness.py --kills 20 --zoo-kills 6`."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import crash_harness as ch  # noqa: E402

from engine.errors import BadInput  # noqa: E402

SMALL = dict(n_train=32, max_length=32, epochs=2, batch_size=8, lr=1e-2, warmup=0.0, train_dtype="fp32",
             eval_n=24, eval_max_length=64, eval_dtype="fp32")


def test_killed_zoo_builds_never_leave_a_usable_half_folder(tmp_path, tiny_model_dir):
    rep = ch.zoo_harness(tmp_path, kills=1, seed=5, model=tiny_model_dir, log=lambda *a: None)
    assert rep.ok, rep.problems
    assert rep.kills == 1 and rep.completed_runs >= 1


def test_half_written_zoo_folder_is_never_used(tmp_path, tiny_model_dir, monkeypatch):
    """A model folder without its card (an interrupted copy, a build by an older version)
    that even holds loadable weights: `shapdiff run` must not use it as the built model."""
    from engine import zoo
    from engine.config import ModelSpec
    from engine.jobs import model_folder
    from engine.workspace import Workspace

    teacher = zoo.Recipe(base=str(tiny_model_dir), **SMALL)
    monkeypatch.setattr(zoo, "default_recipe", lambda name: teacher)
    data = ch._zoo_data(tmp_path / "data")
    ws = Workspace(tmp_path / "ws")
    final = zoo.model_dir(ws, teacher)
    shutil.copytree(tiny_model_dir, final)          # whole weights, but no card.json: never finished
    assert zoo.built_folder(ws, teacher) is None
    spec = ModelSpec(name="t", source="zoo:teacher", role="reference")
    try:
        folder, kind = model_folder(ws, spec, data)
    except BadInput as exc:
        assert "incomplete" in str(exc)
        return
    assert (Path(folder) / zoo.CARD).is_file(), "a folder without its card was handed out"
