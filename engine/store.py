"""SQLite store (sqlite-utils): one connection per thread, WAL, migrations on open.

Every write of a result happens in one transaction, so a result row (a prediction
batch, an explanation with all its token rows) is stored whole or not at all.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from engine.errors import StoreError
from engine.migrations import migrations

BUSY_TIMEOUT_MS = 30_000


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    if readonly:
        # On a read-only folder (a read-only mount, a copy on a DVD) SQLite cannot create the
        # WAL's -shm file, so a plain read-only open fails; nobody can write there, so the
        # file can be opened as immutable.
        immutable = "&immutable=1" if not os.access(path.parent, os.W_OK) else ""
        uri = f"file:{path}?mode=ro{immutable}"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    else:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def _set_wal(conn: sqlite3.Connection) -> str:
    """Switch to WAL and return the journal mode now in force.

    Changing the journal mode needs an exclusive lock and SQLite answers "database is
    locked" at once, without calling the busy handler, when another process holds any lock
    (several processes opening a fresh database together do). So retry until the busy
    timeout has passed; once one process has switched the file, the mode is persistent and
    the others find it already set.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.2)


class _Database(Database):
    """sqlite-utils' Database whose outermost ``atomic()`` starts with BEGIN IMMEDIATE.

    A deferred BEGIN reads first (sqlite-utils looks at the schema before it writes) and then
    upgrades to a write lock; if another process committed in between, SQLite refuses the
    upgrade at once with "database is locked", whatever the busy timeout. Taking the write
    lock first waits for it instead. Every engine module that writes through
    ``store.db.atomic()`` gets this.
    """

    @contextmanager
    def atomic(self) -> Iterator["Database"]:
        if self.conn.in_transaction:
            with super().atomic():
                yield self
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")


class Store:
    """One open database. Not shared between threads: open one per thread."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._thread = threading.get_ident()
        if readonly and not self.path.exists():
            raise StoreError(
                f"no database at {self.path}",
                "run `shapdiff run` first, or point --workspace at a folder holding shapdiff.db",
            )
        try:
            conn = _connect(self.path, readonly)
            if not readonly:
                mode = _set_wal(conn)
                if mode.lower() != "wal":  # pragma: no cover - exotic filesystems
                    conn.execute("PRAGMA journal_mode=DELETE")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self.db = _Database(conn)
            self._check_and_migrate()
        except sqlite3.DatabaseError as exc:
            raise _explain_db_error(self.path, exc) from exc

    # -- lifecycle ---------------------------------------------------------------------

    def _check_and_migrate(self) -> None:
        known = {m.name for m in migrations._migrations}
        applied = {m.name for m in migrations.applied(self.db)}
        newer = applied - known
        if newer:
            raise StoreError(
                f"{self.path} was written by a newer shapdiff (schema {sorted(newer)[-1]})",
                "upgrade shapdiff (pip install -U shapdiff) or use another --workspace; "
                "the database was not changed",
            )
        if migrations.pending(self.db):
            if self.readonly:
                raise StoreError(
                    f"{self.path} needs a schema upgrade but was opened read-only",
                    "open it once with a writable workspace (any shapdiff command that writes)",
                )
            # Two processes may open a fresh database at once (the TUI and `shapdiff run`):
            # take the write lock first and look again, so only one of them migrates.
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                if migrations.pending(self.db):
                    migrations.apply(self.db)  # every migration is transactional: nested savepoints
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def write(self) -> Iterator["Store"]:
        """One write transaction, whole or not at all (nested: a savepoint).

        It starts with BEGIN IMMEDIATE: the write lock is taken first (waiting up to the busy
        timeout for other writers), so the transaction never has to upgrade a read snapshot
        that another process's commit made stale, which SQLite refuses at once with
        "database is locked". Errors of the disk or the lock reach the user as StoreError.
        """
        try:
            with self.db.atomic():
                yield self
        except sqlite3.OperationalError as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            if any(k in str(exc) for k in _ENVIRONMENT_ERRORS):
                raise _explain_db_error(self.path, exc) from exc
            raise

    @contextmanager
    def snapshot(self) -> Iterator["Store"]:
        """Several reads from one consistent state of the database (a read transaction).

        Without it each query sees the latest commit, so a row and its children read by
        two queries can come from two different writes of another process.
        """
        if self.conn.in_transaction:
            yield self
            return
        self.conn.execute("BEGIN")
        try:
            yield self
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    def integrity_ok(self) -> bool:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # -- experiments, reviews, samples ----------------------------------------------

    def put_experiment(self, name: str, preset: dict, preset_hash: str, dataset: str,
                       seed: int, metrics_n: int, explain_n: int) -> None:
        with self.write():
            self.db["experiments"].upsert(
                {"name": name, "preset": json.dumps(preset, sort_keys=True),
                 "preset_hash": preset_hash, "dataset": dataset, "seed": seed,
                 "metrics_n": metrics_n, "explain_n": explain_n, "updated_at": now()},
                pk="name",
            )

    def experiments(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM experiments ORDER BY updated_at DESC, name"))

    def latest_experiment(self) -> str | None:
        rows = self.experiments()
        return rows[0]["name"] if rows else None

    def put_sample(self, experiment: str, reviews: Sequence[dict[str, Any]],
                   explain_ids: Sequence[str]) -> None:
        """Store the reviews of a sample and its membership (metrics and explain roles)."""
        with self.write():
            self.db["reviews"].upsert_all(reviews, pk="id")
            self.conn.execute("DELETE FROM samples WHERE experiment = ?", [experiment])
            self.db["samples"].insert_all(
                [{"experiment": experiment, "role": "metrics", "review_id": r["id"], "ordinal": i}
                 for i, r in enumerate(reviews)]
                + [{"experiment": experiment, "role": "explain", "review_id": rid, "ordinal": i}
                   for i, rid in enumerate(explain_ids)]
            )

    def sample_ids(self, experiment: str, role: str = "metrics") -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT review_id FROM samples WHERE experiment = ? AND role = ? ORDER BY ordinal",
            [experiment, role])]

    def review(self, review_id: str) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM reviews WHERE id = ?", [review_id]))
        return rows[0] if rows else None

    def reviews(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(ids)
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            q = f"SELECT * FROM reviews WHERE id IN ({','.join('?' * len(chunk))})"
            out.update({r["id"]: r for r in self.db.query(q, chunk)})
        return out

    # -- models -------------------------------------------------------------------------

    def upsert_model(self, row: dict[str, Any]) -> None:
        row = dict(row)
        for key in ("label_names", "card"):
            if key in row and not isinstance(row[key], str | None):
                row[key] = json.dumps(row[key], sort_keys=True)
        row.setdefault("created_at", now())
        with self.write():
            existing = self.model(row["id"])
            if existing:
                row["created_at"] = existing["created_at"]
                row["name"] = existing["name"]
            self.db["models"].upsert(row, pk="id")

    def model(self, model_id: str) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM models WHERE id = ?", [model_id]))
        return _decode_model(rows[0]) if rows else None

    def set_experiment_models(self, experiment: str, entries: Sequence[dict[str, Any]]) -> None:
        """entries: dicts with name, model_id, role; order is kept."""
        with self.write():
            self.conn.execute("DELETE FROM experiment_models WHERE experiment = ?", [experiment])
            self.db["experiment_models"].insert_all(
                [{"experiment": experiment, "name": e["name"], "model_id": e["model_id"],
                  "role": e["role"], "ordinal": i} for i, e in enumerate(entries)]
            )

    def experiment_models(self, experiment: str) -> list[dict[str, Any]]:
        """The experiment's models in preset order: name, role and the models row."""
        rows = self.db.query(
            """SELECT em.name AS name, em.role AS role, m.* , em.name AS name
               FROM experiment_models em JOIN models m ON m.id = em.model_id
               WHERE em.experiment = ? ORDER BY em.ordinal""", [experiment])
        return [_decode_model(r) for r in rows]

    # -- predictions ----------------------------------------------------------------

    def predicted_ids(self, model_id: str, settings_hash: str) -> set[str]:
        return {r[0] for r in self.conn.execute(
            "SELECT review_id FROM predictions WHERE model_id = ? AND settings_hash = ?",
            [model_id, settings_hash])}

    def put_predictions(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert a batch of whole prediction rows in one transaction."""
        with self.write():
            self.db["predictions"].upsert_all(rows, pk=("model_id", "review_id", "settings_hash"))

    def predictions(self, model_id: str, review_ids: Sequence[str] | None = None,
                    settings_hash: str | None = None) -> list[dict[str, Any]]:
        """Prediction rows of a model (latest settings first when several exist)."""
        sql = "SELECT * FROM predictions WHERE model_id = ?"
        args: list[Any] = [model_id]
        if settings_hash:
            sql += " AND settings_hash = ?"
            args.append(settings_hash)
        rows = list(self.db.query(sql + " ORDER BY created_at", args))
        if review_ids is not None:
            wanted = set(review_ids)
            rows = [r for r in rows if r["review_id"] in wanted]
        latest: dict[str, dict[str, Any]] = {}
        for r in rows:  # later rows win: the newest settings for each review
            latest[r["review_id"]] = r
        return list(latest.values())

    # -- explanations -----------------------------------------------------------------

    def explained_ids(self, model_id: str, settings_hash: str) -> set[str]:
        return {r[0] for r in self.conn.execute(
            "SELECT review_id FROM explanations WHERE model_id = ? AND settings_hash = ?",
            [model_id, settings_hash])}

    def put_explanation(self, row: dict[str, Any], tokens: Sequence[dict[str, Any]]) -> int:
        """Store one explanation and all its token rows atomically; returns its id.

        ``tokens``: dicts with position, token, start, end, value, special. An existing
        explanation with the same (model, review, settings) is replaced.
        """
        row = dict(row)
        for key in ("settings", "versions"):
            if not isinstance(row.get(key), str):
                row[key] = json.dumps(row[key], sort_keys=True)
        row.setdefault("created_at", now())
        with self.write():
            self.conn.execute(
                "DELETE FROM explanations WHERE model_id = ? AND review_id = ? AND settings_hash = ?",
                [row["model_id"], row["review_id"], row["settings_hash"]])
            cur = self.db["explanations"].insert(row)
            eid = int(cur.last_pk)
            self.conn.executemany(
                "INSERT INTO attributions (explanation_id, position, token, start, end, value, special)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(eid, t["position"], t["token"], t["start"], t["end"], float(t["value"]),
                  int(t.get("special", 0))) for t in tokens])
        return eid

    def explanation(self, model_id: str, review_id: str,
                    settings_hash: str | None = None) -> dict[str, Any] | None:
        """The explanation row (newest if no settings hash is given) with its tokens."""
        sql = "SELECT * FROM explanations WHERE model_id = ? AND review_id = ?"
        args: list[Any] = [model_id, review_id]
        if settings_hash:
            sql += " AND settings_hash = ?"
            args.append(settings_hash)
        with self.snapshot():  # the row and its tokens from the same write
            rows = list(self.db.query(sql + " ORDER BY created_at DESC, id DESC LIMIT 1", args))
            if not rows:
                return None
            row = rows[0]
            row["tokens"] = list(self.db.query(
                "SELECT position, token, start, end, value, special FROM attributions"
                " WHERE explanation_id = ? ORDER BY position", [row["id"]]))
        row["settings"] = json.loads(row["settings"])
        row["versions"] = json.loads(row["versions"])
        return row


def _decode_model(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    if isinstance(row.get("label_names"), str):
        row["label_names"] = json.loads(row["label_names"])
    if isinstance(row.get("card"), str):
        row["card"] = json.loads(row["card"])
    return row


# sqlite3.OperationalError texts caused by the disk, the file or another process, not by shapdiff
_ENVIRONMENT_ERRORS = ("disk is full", "disk I/O error", "locked", "busy", "readonly", "unable to open")


def _explain_db_error(path: Path, exc: sqlite3.DatabaseError) -> StoreError:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return StoreError(
            f"{path} is not a readable shapdiff database ({text})",
            "move the file aside (it is left untouched) or use another --workspace",
        )
    if "disk is full" in text or "disk I/O error" in text:
        return StoreError(
            f"cannot write the database {path}: the disk is full or failing ({text})",
            "free space on that disk (or use another --workspace) and run again; "
            "results stored before are whole, the unfinished write was rolled back",
        )
    if "locked" in text or "busy" in text:
        return StoreError(
            f"the database {path} stayed locked by another process for {BUSY_TIMEOUT_MS // 1000} s",
            "wait for the other shapdiff process to finish (or stop it) and run again; nothing was lost",
        )
    if "readonly" in text or "unable to open" in text:
        return StoreError(
            f"cannot write the database {path} ({text})",
            "use a writable --workspace; nothing stored was changed",
        )
    return StoreError(f"database error in {path}: {text}",
                      "check the file and the disk; nothing stored was changed")


def open_store(db_path: str | Path, *, readonly: bool = False) -> Store:
    """Open (creating and migrating if needed) the store at ``db_path``."""
    return Store(db_path, readonly=readonly)
