"""Concurrency: a reader (the engine's read path, as the TUI uses it) queries in a loop while
`shapdiff run` and an explanation writer write; no "database is locked" reaches the user and
every explanation read is whole. Also: processes opening a fresh database at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONC = ROOT / "bench" / "concurrency.py"


def _env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_fresh_database_opened_by_several_processes_at_once(tmp_path):
    db = tmp_path / "shapdiff.db"
    start = time.time() + 1.5
    code = ("import sys, time; from engine.store import open_store\n"
            f"t = {start}\n"
            "while time.time() < t: pass\n"
            "open_store(sys.argv[1]).close(); print('ok')")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db)], cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [o[1][-500:] for o in outs]
    from engine.store import open_store

    with open_store(db) as s:
        assert s.integrity_ok()


def test_engine_writes_through_db_atomic_wait_for_the_lock(tmp_path):
    """Modules that write with ``store.db.atomic()`` (faithfulness) from several processes at
    once: a deferred transaction failed at once with "database is locked"; none may."""
    from engine.store import open_store

    db = tmp_path / "shapdiff.db"
    with open_store(db) as s:
        s.db["t"].create({"k": str, "v": int}, pk="k")
    start = time.time() + 1.5
    code = ("import sys, time; from engine.store import open_store\n"
            "s = open_store(sys.argv[1]); who = sys.argv[2]\n"
            f"t = {start}\n"
            "while time.time() < t: pass\n"
            "for i in range(200):\n"
            "    with s.db.atomic():\n"
            "        s.db['t'].upsert({'k': f'{who}-{i % 20}', 'v': i}, pk='k')\n"
            "print('ok')")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db), str(w)], cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 3, [o[1][-300:] for o in outs]


def test_snapshot_reads_one_state(tmp_path):
    """A row and its children read inside Store.snapshot() come from the same commit."""
    from engine.store import open_store

    db = tmp_path / "shapdiff.db"
    w, r = open_store(db), open_store(db)
    w.db["reviews"].insert({"id": "r", "dataset": "d", "split": "s", "source_id": "r", "label": 1,
                            "text": "good film", "n_chars": 9, "encoding": "utf-8"})
    w.upsert_model({"id": "m", "name": "m", "source": "s", "kind": "local", "content_hash": "h",
                    "positive_index": 1, "label_names": ["NEGATIVE", "POSITIVE"], "max_length": 8})
    row = {"model_id": "m", "review_id": "r", "settings_hash": "h", "settings": {}, "output": "logit",
           "base_value": 0.0, "fx": 0.0, "additivity_error": 0.0, "additivity_ok": 1, "max_evals": 10,
           "n_tokens": 3, "truncated": 0, "device": "cpu", "versions": {}, "seconds": 0.0}
    toks = [{"position": p, "token": "t", "start": 0, "end": 1, "value": 1.0} for p in range(3)]
    w.put_explanation(row, toks)
    with r.snapshot():
        eid, n = r.conn.execute("SELECT id, n_tokens FROM explanations").fetchone()
        w.put_explanation(row | {"n_tokens": 2}, toks[:2])   # replaced by another connection
        got = r.conn.execute("SELECT COUNT(*) FROM attributions WHERE explanation_id = ?", [eid]).fetchone()[0]
    assert got == n == 3
    e = r.explanation("m", "r")
    assert e["n_tokens"] == len(e["tokens"]) == 2
    w.close()
    r.close()


@pytest.fixture(scope="module")
def concurrent_run(tmp_path_factory, tiny_model_dir):
    """`shapdiff run` + an explanation writer + a reader, all at once on one fresh workspace."""
    sys.path.insert(0, str(ROOT / "bench"))
    import crash_harness as ch

    tmp = tmp_path_factory.mktemp("conc")
    data = tmp / "data"
    ch.write_data(data, 30)
    preset = ch.write_preset(tmp / "p.toml", tiny_model_dir, 60, 2, 20, ("int8",))
    ws = tmp / "ws"
    ws.mkdir()
    db = ws / "shapdiff.db"
    reader = subprocess.Popen([sys.executable, str(CONC), "read", str(db), "8"], cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writer = subprocess.Popen([sys.executable, str(CONC), "write", str(db), "6"], cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = subprocess.run(ch.run_cmd(preset, ws, data), cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=300)
    w_out, w_err = writer.communicate(timeout=120)
    r_out, r_err = reader.communicate(timeout=120)
    assert writer.returncode == 0, w_err[-2000:]
    assert reader.returncode == 0, r_err[-2000:]
    return run, json.loads(w_out.strip().splitlines()[-1]), json.loads(r_out.strip().splitlines()[-1]), db


def test_reader_never_sees_locks_errors_or_partial_explanations(concurrent_run):
    run, w, r, db = concurrent_run
    assert run.returncode == 0, run.stderr[-2000:]
    assert "locked" not in run.stderr
    assert w["locked"] == w["errors"] == 0, w
    assert r["locked"] == 0, r
    assert r["errors"] == 0, r["first_error"]
    assert r["partial"] == 0, r
    assert r["reads"] > 10 and r["explanations_seen"] > 10 and w["writes"] > 10
    from engine.store import open_store

    with open_store(db) as s:
        assert s.integrity_ok()
        assert s.conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 120


def test_tui_read_path_sees_only_whole_explanations(concurrent_run):
    """engine.browse.explanation_view (the TUI's read query)."""
    _, _, r, _ = concurrent_run
    if r["browse_seen"] == 0:
        pytest.skip("engine.browse not present")
    assert r["browse_partial"] == 0, f"browse.explanation_view read {r['browse_partial']} partial explanations"
