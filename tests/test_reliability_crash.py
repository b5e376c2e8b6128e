"""Crash safety (CI size): SIGKILL `shapdiff run` a few times at seeded random moments,
restart it, and check the store is whole after every kill and equal to an uninterrupted run
at the end. The full 20-kill version: `.venv/bin/python bench/crash_harness.py --kills 20`."""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _harness():
    spec = importlib.util.spec_from_file_location("crash_harness", ROOT / "bench" / "crash_harness.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["crash_harness"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_sigkill_and_restart_loses_nothing(tmp_path, tiny_model_dir):
    ch = _harness()
    rep = ch.harness(tmp_path, kills=3, seed=3, per_class=10, explain_n=1, max_evals=10, variants=("int8",),
                     model=tiny_model_dir, log=lambda *a: None, inprocess_reference=True)
    assert rep.ok, "\n".join(rep.problems)
    assert rep.kills == 3
    assert rep.completed_runs >= 1
    assert rep.reference_rows["predictions"] == 2 * 20


def test_check_whole_detects_a_half_written_explanation(tmp_path):
    """The harness's invariant checker is not vacuous: a broken explanation is reported."""
    ch = _harness()
    from engine.store import open_store

    db = tmp_path / "shapdiff.db"
    open_store(db).close()
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO reviews VALUES ('r', 'd', 's', 'r', 1, NULL, 'good', 4, 'utf-8')")
    conn.execute("INSERT INTO models VALUES ('m', 'm', 's', 'local', '', 'h', 1, '[]', 8, 1, NULL, 'now')")
    conn.execute("INSERT INTO explanations (id, model_id, review_id, settings_hash, settings, output, base_value,"
                 " fx, additivity_error, additivity_ok, max_evals, n_tokens, truncated, device, versions,"
                 " seconds, created_at) VALUES (1, 'm', 'r', 'h', '{}', 'logit', 0, 0, 0, 1, 10, 3, 0, 'cpu',"
                 " '{}', 0, 'now')")
    conn.execute("INSERT INTO attributions VALUES (1, 0, '[CLS]', 0, 0, 0.0, 1)")
    conn.commit()
    conn.close()
    problems = ch.check_whole(db)
    assert any("1 token rows for n_tokens=3" in p for p in problems)
