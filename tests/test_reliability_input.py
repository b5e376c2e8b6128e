"""Hostile input: each case gives a clear message and exit code 2, and nothing stored is lost.

A workspace with real results is built once; every hostile run is pointed at it and the
stored tables must be unchanged afterwards. Valid-but-odd reviews (only emoji, 100,000
characters, mixed encodings) are predicted and stored, truncation recorded."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.cli import main

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import crash_harness as ch  # noqa: E402

BASE = ([{"id": f"test/neg/{i}_1", "label": 0, "rating": 1, "text": f"a dull and boring film, number {i}"}
         for i in range(6)]
        + [{"id": f"test/pos/{i}_9", "label": 1, "rating": 9, "text": f"a moving and brilliant film, number {i}"}
           for i in range(6)])


def jsonl(folder: Path, name: str, rows=None, raw: bytes | None = None, gz: bool = True) -> str:
    body = raw if raw is not None else b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)
    (folder / name).write_bytes(gzip.compress(body) if gz else body)
    return name


def preset(path: Path, model: Path, data_path: str | None = None, dataset: str = "imdb",
           n: int = 12, extra: str = "", models: str | None = None, max_length: int = 64,
           name: str = "hostile") -> Path:
    data = f'dataset = "{dataset}"\n' + (f'path = "{data_path}"\n' if data_path else "")
    models = models or (f'[[models]]\nname = "ref"\nsource = "{model}"\nrole = "reference"\n'
                        f'[[models]]\nname = "ref-int8"\nsource = "{model}"\nvariant = "int8"\n')
    path.write_text(f'name = "{name}"\n[data]\n{data}[sample]\nmetrics_n = {n}\nexplain_n = 0\nseed = 1\n'
                    f'{models}[predict]\nmax_length = {max_length}\n{extra}', encoding="utf-8")
    return path


def run(capsys, preset_path: Path, ws: Path, data: Path, *more: str) -> tuple[int, str]:
    rc = main(["run", "--preset", str(preset_path), "--workspace", str(ws), "--data-path", str(data),
               "--quiet", *more])
    out = capsys.readouterr()
    return rc, out.out + out.err


@pytest.fixture(scope="module")
def good(tmp_path_factory, tiny_model_dir):
    """A workspace holding the results of a good run, and its snapshot."""
    tmp = tmp_path_factory.mktemp("hostile")
    data = tmp / "data"
    data.mkdir()
    jsonl(data, "good.jsonl.gz", BASE)
    ws = tmp / "ws"
    p = preset(tmp / "good.toml", tiny_model_dir, "good.jsonl.gz")
    assert main(["run", "--preset", str(p), "--workspace", str(ws), "--data-path", str(data), "--quiet"]) == 0
    return tmp, data, ws, ch.snapshot(ws / "shapdiff.db")


def unchanged(ws: Path, snap, allow_new: bool = False) -> None:
    """Every stored row is still there, equal (allow_new: rows may have been added)."""
    problems, _ = ch.compare(snap, ch.snapshot(ws / "shapdiff.db"))
    if allow_new:
        problems = [p for p in problems if "unexpected rows" not in p]
    assert not problems, problems
    conn = ch._connect(ws / "shapdiff.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


# -- data files -----------------------------------------------------------------------------

DATA_CASES = {
    "empty file": (lambda d: ((d / "c.jsonl.gz").write_bytes(b""), "c.jsonl.gz")[1], "holds no reviews"),
    "empty gzip": (lambda d: jsonl(d, "c.jsonl.gz", raw=b""), "holds no reviews"),
    "truncated gzip": (lambda d: ((d / "c.jsonl.gz").write_bytes(
        gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in BASE * 20))[:300]), "c.jsonl.gz")[1],
        "truncated"),
    "not gzip": (lambda d: ((d / "c.jsonl.gz").write_bytes(b"PK\x03\x04 a zip file"), "c.jsonl.gz")[1],
                 "not a readable gzip"),
    "wrong columns": (lambda d: jsonl(d, "c.jsonl.gz", [{"review": "good", "sentiment": 1}]),
                      "expected an object with 'text' and 'label'"),
    "not json": (lambda d: jsonl(d, "c.jsonl.gz", raw=b"id,label,text\n1,1,good\n"), "not a JSON line"),
    "label 2": (lambda d: jsonl(d, "c.jsonl.gz", BASE + [{"id": "x", "label": 2, "text": "ok"}]), "label 2 is not 0 or 1"),
    "label -1": (lambda d: jsonl(d, "c.jsonl.gz", BASE + [{"id": "x", "label": -1, "text": "ok"}]), "is not 0 or 1"),
    "label pos": (lambda d: jsonl(d, "c.jsonl.gz", BASE + [{"id": "x", "label": "pos", "text": "ok"}]), "is not 0 or 1"),
    "label 0.5": (lambda d: jsonl(d, "c.jsonl.gz", BASE + [{"id": "x", "label": 0.5, "text": "ok"}]), "is not 0 or 1"),
    "only whitespace": (lambda d: jsonl(d, "c.jsonl.gz", BASE + [{"id": "x", "label": 1, "text": " \n\t\u3000 "}]),
                        "the review is empty"),
    "NUL bytes": (lambda d: jsonl(d, "c.jsonl.gz", BASE + [{"id": "x", "label": 1, "text": "good\x00film"}]),
                  "NUL"),
    "text not a string": (lambda d: jsonl(d, "c.jsonl.gz", BASE + [{"id": "x", "label": 1, "text": None}]),
                          "not a string"),
    "lone surrogate": (lambda d: jsonl(d, "c.jsonl.gz", raw=b'{"id": "x", "label": 1, "text": "a \\ud800 b"}\n'),
                       "invalid Unicode"),
    "duplicate ids": (lambda d: jsonl(d, "c.jsonl.gz", BASE + [BASE[0]]), "appears more than once"),
    "deeply nested": (lambda d: jsonl(d, "c.jsonl.gz", raw=b"[" * 100_000 + b"\n"), "not a JSON line"),
    "csv wrong columns": (lambda d: ((d / "c.csv").write_text("review,sentiment\ngood,1\n"), "c.csv")[1],
                          "no column 'text'"),
    "csv label 3": (lambda d: ((d / "c.csv").write_text("text,label\ngood,3\n"), "c.csv")[1], "is not 0 or 1"),
    "csv empty": (lambda d: ((d / "c.csv").write_bytes(b""), "c.csv")[1], "no column"),
    "path escapes": (lambda d: "../outside.jsonl.gz", "inside"),
    "folder for a file": (lambda d: ((d / "dirfile.csv").mkdir(exist_ok=True), "dirfile.csv")[1], "cannot read"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_hostile_data_is_refused_and_nothing_stored_is_lost(case, good, capsys, tiny_model_dir):
    tmp, data, ws, snap = good
    make, expect = DATA_CASES[case]
    name = make(data)
    p = preset(tmp / "c.toml", tiny_model_dir, name, dataset="csv" if name.endswith(".csv") else "imdb")
    rc, out = run(capsys, p, ws, data)
    assert rc == 2, out
    assert expect in out, out
    assert "Traceback" not in out
    assert "what to do:" in out
    unchanged(ws, snap)


def test_valid_but_odd_reviews_are_predicted_and_stored(tmp_path, capsys, tiny_model_dir):
    """Only emoji: a review (its tokens are [UNK]); 100,000 characters: stored whole, the
    prediction records the truncation; a file mixing UTF-8 and Windows-1252 lines loads,
    each review decoded by its own line and its encoding recorded."""
    long = ("an endless but wonderful film. " * 4000)[:100_000]
    rows = BASE + [{"id": "test/pos/100_10", "label": 1, "rating": 10, "text": "😀🎬🍿👍✨"},
                   {"id": "test/neg/101_1", "label": 0, "rating": 1, "text": long}]
    body = b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)
    body += b'{"id": "test/pos/102_8", "label": 1, "text": "caf\xe9 cr\xe8me \x93great\x94"}\n'  # Windows-1252 bytes
    body += '{"id": "test/neg/103_2", "label": 0, "text": "na\xefve and dull"}\n'.encode("utf-8")
    data = tmp_path / "data"
    data.mkdir()
    jsonl(data, "odd.jsonl.gz", raw=body)
    p = preset(tmp_path / "p.toml", tiny_model_dir, "odd.jsonl.gz", n=16)
    rc, out = run(capsys, p, tmp_path / "ws", data)
    assert rc == 0, out
    conn = sqlite3.connect(tmp_path / "ws" / "shapdiff.db")
    got = {r[0]: r[1:] for r in conn.execute(
        "SELECT r.source_id, r.n_chars, r.encoding, r.text, COUNT(p.review_id), MAX(p.truncated)"
        " FROM reviews r JOIN predictions p ON p.review_id = r.id GROUP BY r.id")}
    assert got["test/pos/100_10"][2:] == ("😀🎬🍿👍✨", 2, 0)
    assert got["test/neg/101_1"][0] == 100_000 and got["test/neg/101_1"][3:] == (2, 1)
    assert got["test/pos/102_8"][1:3] == ("cp1252", "café crème \u201cgreat\u201d")
    assert got["test/neg/103_2"][1:3] == ("utf-8", "naïve and dull")
    assert len(got) == 16


def test_csv_with_a_long_review_and_mixed_encodings(tmp_path):
    from engine.datasets import load_csv

    long = "x" * 200_000
    raw = ("text,label\n" + f"{long},1\n").encode() + "caf\xe9,0\n".encode("cp1252") + "café,1\n".encode()
    (tmp_path / "r.csv").write_bytes(raw)
    d = load_csv(tmp_path / "r.csv")
    assert [r.text for r in d.reviews] == [long, "café", "café"]
    assert [r.label for r in d.reviews] == [1, 0, 1]


# -- presets ------------------------------------------------------------------------------------

PRESET_CASES = {
    "metrics_n a string": ("[sample]\nmetrics_n = \"many\"", "sample.metrics_n"),
    "metrics_n a numeric string": ("[sample]\nmetrics_n = \"40\"", "valid integer (got '40')"),
    "metrics_n a float": ("[sample]\nmetrics_n = 40.5", "sample.metrics_n"),
    "models not a list": ("models = \"a\"", "models"),
    "trust_remote_code a string": (None, "trust_remote_code: Input should be a valid boolean (got 'yes')"),
    "max_length too small": ("[predict]\nmax_length = 3", "predict.max_length"),
    "unknown key": ("colour = \"red\"", "colour: unknown key"),
    "bad variant": (None, "unknown variant"),
    "two references": (None, "exactly one model"),
    "name ..": ("name = \"..\"", "must hold a letter"),
    "invalid TOML": ("[sample\nmetrics_n = 3", "not valid TOML"),
    "absolute data path": ("[data]\npath = \"/etc/passwd\"", "data.path"),
}


@pytest.mark.parametrize("case", list(PRESET_CASES))
def test_preset_with_wrong_types_or_values(case, good, capsys, tiny_model_dir):
    tmp, data, ws, snap = good
    text, expect = PRESET_CASES[case]
    m = tiny_model_dir
    if case == "trust_remote_code a string":
        body = f'name = "t"\n[[models]]\nname = "a"\nsource = "{m}"\nrole = "reference"\ntrust_remote_code = "yes"\n'
    elif case == "bad variant":
        body = f'name = "t"\n[[models]]\nname = "a"\nsource = "{m}"\nrole = "reference"\nvariant = "fp4"\n'
    elif case == "two references":
        body = f'name = "t"\n' + "".join(f'[[models]]\nname = "{n}"\nsource = "{m}"\nrole = "reference"\n' for n in "ab")
    elif case in ("models not a list", "name ..", "unknown key"):
        body = text + "\n" + (f'[[models]]\nname = "a"\nsource = "{m}"\nrole = "reference"\n'
                              if case != "models not a list" else "") + ('name = "t"\n' if case != "name .." else "")
        if case == "name ..":
            body = text + "\n" + f'[[models]]\nname = "a"\nsource = "{m}"\nrole = "reference"\n'
        if case == "unknown key":
            body = 'name = "t"\ncolour = "red"\n' + f'[[models]]\nname = "a"\nsource = "{m}"\nrole = "reference"\n'
        if case == "models not a list":
            body = 'name = "t"\nmodels = "a"\n'
    else:
        body = f'name = "t"\n[[models]]\nname = "a"\nsource = "{m}"\nrole = "reference"\n' + text + "\n"
    p = tmp / "bad.toml"
    p.write_text(body, encoding="utf-8")
    rc, out = run(capsys, p, ws, data)
    assert rc == 2, out
    assert expect in out, out
    unchanged(ws, snap)


def test_preset_file_not_utf8(good, capsys):
    tmp, data, ws, snap = good
    p = tmp / "latin.toml"
    p.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    rc, out = run(capsys, p, ws, data)
    assert rc == 2 and "cannot read preset" in out
    unchanged(ws, snap)


# -- databases ------------------------------------------------------------------------------------

def _ws_with_db(tmp: Path, content: bytes) -> Path:
    ws = tmp / "dbws"
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir()
    (ws / "shapdiff.db").write_bytes(content)
    return ws


@pytest.mark.parametrize("kind", ["not sqlite", "truncated", "newer schema", "empty header"])
def test_database_that_cannot_be_used_is_left_untouched(kind, good, capsys, tiny_model_dir):
    tmp, data, ws, snap = good
    src = ws / "shapdiff.db"
    c = sqlite3.connect(src)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    full = src.read_bytes()
    if kind == "not sqlite":
        content = b"this is a text file, not a database\n" * 200
    elif kind == "truncated":
        content = full[: len(full) // 3]
    elif kind == "empty header":
        content = full[:100]
    else:
        content = full
    dbws = _ws_with_db(tmp, content)
    if kind == "newer schema":
        c = sqlite3.connect(dbws / "shapdiff.db")
        c.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES ('shapdiff', 'm999_future', 'x')")
        c.commit()
        c.close()
        content = (dbws / "shapdiff.db").read_bytes()
    p = preset(tmp / "db.toml", tiny_model_dir, "good.jsonl.gz")
    for argv in (["run", "--preset", str(p), "--data-path", str(data), "--quiet"], ["metrics"]):
        rc = main([*argv, "--workspace", str(dbws)])
        out = capsys.readouterr()
        text = out.out + out.err
        assert rc == 2, (argv, text)
        assert "what to do:" in text and "Traceback" not in text
        assert {"not sqlite": "not a readable shapdiff database", "truncated": "not a readable",
                "empty header": "not a readable", "newer schema": "newer shapdiff"}[kind] in text, text
        assert (dbws / "shapdiff.db").read_bytes() == content, "the database file was changed"


# -- read-only and full disks ---------------------------------------------------------------------

def _can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return True


@pytest.fixture
def tmpfs(tmp_path):
    if not _can_mount():
        pytest.skip("needs root to mount a tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounted = []

    def mount(size: str, ro: bool = False) -> Path:
        opts = f"size={size}" + (",ro" if ro else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], capture_output=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode()[-200:]}")
        mounted.append(mnt)
        return mnt
    yield mount
    for m in mounted:
        subprocess.run(["umount", str(m)], capture_output=True)


def test_read_only_workspace(good, capsys, tiny_model_dir, tmpfs):
    tmp, data, ws, snap = good
    mnt = tmpfs("20m")
    shutil.copytree(ws, mnt / "ws")
    r = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True)
    if r.returncode:
        pytest.skip("cannot remount read-only")
    p = preset(tmp / "ro.toml", tiny_model_dir, "good.jsonl.gz", max_length=32)   # new work to write
    rc, out = run(capsys, p, mnt / "ws", data)
    assert rc == 2, out
    assert "read-only" in out and "what to do:" in out
    unchanged(mnt / "ws", snap)
    rc = main(["metrics", "--workspace", str(mnt / "ws"), "--json"])   # stored results stay readable
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert json.loads(out.out)["models"][0]["n"] == 12


def test_full_disk_during_a_run(good, capsys, tiny_model_dir, tmpfs):
    """A real full disk: a 400 KiB tmpfs; the run stops with exit 2 and a message, and what it
    stored before is whole (integrity ok, no half-written rows)."""
    tmp, data, ws, snap = good
    mnt = tmpfs("400k")
    many = [{"id": f"test/{'pos' if i % 2 else 'neg'}/{i}_5", "label": i % 2, "rating": 5,
             "text": f"review number {i} " + "words " * 300} for i in range(400)]
    jsonl(data, "many.jsonl.gz", many)
    p = preset(tmp / "full.toml", tiny_model_dir, "many.jsonl.gz", n=400)
    rc, out = run(capsys, p, mnt / "ws", data)
    assert rc == 2, out
    assert "disk is full" in out or "No space left" in out or "full" in out, out
    assert "Traceback" not in out
    if (mnt / "ws" / "shapdiff.db").exists():
        assert ch.check_whole(mnt / "ws" / "shapdiff.db") == []


def test_injected_disk_full_rolls_back_and_says_so(good, capsys, tiny_model_dir, monkeypatch):
    """Without root: the prediction write fails with SQLite's 'database or disk is full'."""
    tmp, data, ws, snap = good
    import sqlite_utils.db

    real = sqlite_utils.db.Table.upsert_all

    def full(self, *a, **k):
        if self.name == "predictions":
            real(self, *a, **k)        # half the work is done inside the transaction...
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, *a, **k)

    monkeypatch.setattr(sqlite_utils.db.Table, "upsert_all", full)
    p = preset(tmp / "inj.toml", tiny_model_dir, "good.jsonl.gz", max_length=48, name="injected")
    rc, out = run(capsys, p, ws, data)
    assert rc == 2, out
    assert "disk is full" in out and "what to do:" in out
    unchanged(ws, snap, allow_new=True)   # ...and rolled back: nothing changed, nothing lost
    conn = sqlite3.connect(ws / "shapdiff.db")
    assert conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == len(snap["predictions"])
    conn.close()


def test_injected_oserror_creating_the_workspace(tmp_path, capsys, tiny_model_dir, monkeypatch):
    import errno

    data = tmp_path / "data"
    data.mkdir()
    jsonl(data, "good.jsonl.gz", BASE)
    real = Path.mkdir

    def mkdir(self, *a, **k):
        if self.name == "ws":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    p = preset(tmp_path / "p.toml", tiny_model_dir, "good.jsonl.gz")
    rc, out = run(capsys, p, tmp_path / "ws", data)
    assert rc == 2 and "No space left" in out and "what to do:" in out


# -- offline hub id -------------------------------------------------------------------------------

def test_unknown_hub_id_offline_says_how_to_use_a_local_folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    jsonl(data, "good.jsonl.gz", BASE)
    p = preset(tmp_path / "hub.toml", tmp_path, "good.jsonl.gz",
               models='[[models]]\nname = "hub"\nsource = "nobody-xyz/no-such-model-123"\nrole = "reference"\n')
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "engine.cli", "run", "--preset", str(p), "--workspace",
                        str(tmp_path / "ws"), "--data-path", str(data), "--quiet"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    secs = time.monotonic() - t0
    assert r.returncode == 2, r.stderr
    assert "not in the local cache and the hub is offline" in r.stderr
    assert "--local-dir" in r.stderr and "source to that folder" in r.stderr
    assert "Traceback" not in r.stderr
    assert secs < 30, f"took {secs:.1f} s: waiting for a network?"


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device", "/ws/models/x/model.safetensors"),
                                 OSError(30, "Read-only file system", "/ws/exports/a.png"),
                                 sqlite3.OperationalError("database or disk is full"),
                                 sqlite3.OperationalError("database is locked")])
def test_disk_and_lock_errors_outside_the_store_exit_2(exc, monkeypatch, capsys, tmp_path):
    """Writes outside Store.write() (zoo builds, exports, other tables) meeting a full or
    read-only disk, or a lock held too long, reach the user as a message and exit 2."""
    import engine.cli as cli

    def boom(args):
        raise exc
    monkeypatch.setattr(cli, "cmd_metrics", boom)
    rc = main(["metrics", "--workspace", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "what to do:" in err and "Traceback" not in err


def test_other_errors_are_not_disguised(monkeypatch, tmp_path):
    import engine.cli as cli

    def boom(args):
        raise sqlite3.OperationalError("no such table: nothing")
    monkeypatch.setattr(cli, "cmd_metrics", boom)
    with pytest.raises(sqlite3.OperationalError):
        main(["metrics", "--workspace", str(tmp_path)])
