"""The store: migrations on open, WAL, atomic writes, and databases it must refuse."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from engine.errors import StoreError
from engine.migrations import migrations
from engine.store import open_store


def test_migrations_from_empty_database(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db") as s:
        names = set(s.db.table_names())
        assert {"reviews", "models", "predictions", "explanations", "attributions", "samples"} <= names
        assert [m.name for m in migrations.applied(s.db)] == [m.name for m in migrations._migrations]
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with open_store(tmp_path / "s.db") as s:  # reopening applies nothing twice
        assert len(migrations.applied(s.db)) == len(migrations._migrations)


def test_not_a_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "shapdiff.db"
    db.write_bytes(b"hello, I am a text file" * 100)
    before = db.read_bytes()
    with pytest.raises(StoreError, match="not a readable shapdiff database") as exc:
        open_store(db)
    assert "untouched" in exc.value.hint
    assert db.read_bytes() == before


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    open_store(db).close()
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES ('shapdiff', 'm999_future', 'x')")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer shapdiff") as exc:
        open_store(db)
    assert exc.value.exit_code == 2


def test_read_only_workspace(tmp_path: Path) -> None:
    from engine.workspace import Workspace

    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")  # covered by the injected-error tests
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(Exception, match="read-only|cannot"):
        Workspace(ro).ensure()


def _prep(s) -> None:
    s.put_sample("e", [{"id": "r1", "dataset": "t", "split": "x", "source_id": "1", "label": 1,
                        "rating": None, "text": "good film", "n_chars": 9, "encoding": "utf-8"}], ["r1"])
    s.upsert_model({"id": "m1", "name": "m", "source": "x", "kind": "local", "variant": "", "content_hash": "h",
                    "positive_index": 1, "label_names": ["NEGATIVE", "POSITIVE"], "max_length": 16})


def _expl(value: float) -> dict:
    return {"model_id": "m1", "review_id": "r1", "settings_hash": "s", "settings": {"seed": 0}, "output": "logit",
            "base_value": 0.0, "fx": value, "additivity_error": 0.0, "additivity_ok": 1, "max_evals": 10,
            "evals_used": 10, "n_tokens": 2, "truncated": 0, "device": "cpu", "versions": {}, "seconds": 0.1}


def test_explanation_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db") as s:
        _prep(s)
        toks = [{"position": 0, "token": "good", "start": 0, "end": 4, "value": 0.5},
                {"position": 1, "token": "film", "start": 5, "end": 9, "value": 0.1}]
        s.put_explanation(_expl(0.6), toks)
        bad = toks + [{"position": 1, "token": "dup", "start": 5, "end": 9, "value": 0.1}]  # PK clash mid-write
        with pytest.raises(sqlite3.IntegrityError):
            s.put_explanation(_expl(0.7), bad)
        e = s.explanation("m1", "r1")
        assert e["fx"] == 0.6 and [t["token"] for t in e["tokens"]] == ["good", "film"]
        assert s.conn.execute("SELECT COUNT(*) FROM attributions").fetchone()[0] == 2


def test_reexplaining_replaces_the_old_rows(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db") as s:
        _prep(s)
        s.put_explanation(_expl(0.6), [{"position": 0, "token": "good", "start": 0, "end": 4, "value": 0.6}])
        s.put_explanation(_expl(0.9), [{"position": 0, "token": "good", "start": 0, "end": 4, "value": 0.9}])
        assert s.conn.execute("SELECT COUNT(*) FROM explanations").fetchone()[0] == 1
        assert s.conn.execute("SELECT COUNT(*) FROM attributions").fetchone()[0] == 1
        assert s.explanation("m1", "r1")["tokens"][0]["value"] == 0.9
