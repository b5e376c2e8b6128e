"""Crash harness: SIGKILL `shapdiff run` at random (seeded) moments, restart it, and prove
that nothing stored is ever lost, half-written or different from an uninterrupted run.

    .venv/bin/python bench/crash_harness.py --kills 20          # the full version (~5 min)
    .venv/bin/python bench/crash_harness.py --kills 4 --small   # what CI runs (tests/test_reliability_crash.py)

What it does:

1. builds a tiny random 2-layer BERT classifier (real MiniLM tokenizer) and a small IMDB
   JSON-lines file (real reviews from the data path when present, plus an emoji-only and a
   100,000-character review), and a preset with the model, its int8 and its pruned variant;
2. runs `shapdiff run` once without interruption (the reference workspace);
3. in a fresh workspace, starts `shapdiff run` as a subprocess and SIGKILLs it at a seeded
   random moment: either a random time after start or a random delay after a random
   progress line (so kills land in imports, data loading, model loading, prediction and
   explanation writes alike); after every kill it checks the database on disk
   (integrity_check, foreign keys, whole rows, whole explanations); then it restarts the
   run and kills again. When a run completes before its kill, the round's workspace is
   compared with the reference and a new round starts in a fresh workspace, until
   ``--kills`` kills have happened;
4. compares every finished workspace with the reference: same experiments, samples,
   reviews, models, predictions and explanations (values equal within a tolerance: int8
   dynamic quantization depends slightly on batch composition), every explanation with
   all its tokens, none duplicated.

Exit status 0 when every check passed; the summary is printed as JSON (``--json``) or text.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()

# columns that legitimately differ between two runs of the same work
VOLATILE = {"created_at", "updated_at", "seconds", "applied_at"}
TOL_FP32 = 1e-5
TOL_INT8 = 1e-3   # dynamic quantization scales depend on the batch a review was in


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# -- fixtures: model, data, preset ------------------------------------------------------

def build_model(folder: Path) -> Path:
    """The tests' tiny classifier (tests/conftest.py: build_tiny_classifier)."""
    if (folder / "config.json").exists():
        return folder
    spec = importlib.util.spec_from_file_location("_shapdiff_conftest", ROOT / "tests" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod.build_tiny_classifier(folder)


_WORDS = ("good bad great awful plot acting film movie boring fun loved hated slow brilliant "
          "weak strong script music ending cast story").split()


def write_data(folder: Path, per_class: int) -> Path:
    """reviews.jsonl.gz: per_class negative and positive reviews (+ two hostile-but-valid ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    src = SHARED_DATA / "imdb" / "test.jsonl.gz"
    if src.exists():
        want = {0: per_class, 1: per_class - 2}
        with gzip.open(src, "rt", encoding="utf-8") as fh:
            for line in fh:
                r = json.loads(line)
                if want[r["label"]] > 0 and len(r["text"]) < 1500:
                    want[r["label"]] -= 1
                    rows.append(r)
                if not any(want.values()):
                    break
    else:  # synthetic reviews when the shared data is absent
        rng = random.Random(0)
        for lab in (0, 1):
            for i in range(per_class - (2 if lab else 0)):
                words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 60)))
                rows.append({"id": f"test/{'pos' if lab else 'neg'}/{i}_{9 if lab else 1}",
                             "label": lab, "rating": 9 if lab else 1, "text": words})
    rows.append({"id": "test/pos/90001_10", "label": 1, "rating": 10, "text": "😀🎬🍿👍✨"})
    rows.append({"id": "test/pos/90002_10", "label": 1, "rating": 10,
                 "text": ("a great film, " * 8000)[:100_000]})
    path = folder / "reviews.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def write_preset(path: Path, model: Path, n: int, explain_n: int, max_evals: int,
                 variants: tuple[str, ...] = ("int8", "prune:0.3")) -> Path:
    extra = "".join(f"""[[models]]
name = "ref-{v.replace(':', '')}"
source = "{model}"
variant = "{v}"
""" for v in variants)
    path.write_text(f"""name = "crash"
[data]
dataset = "imdb"
path = "reviews.jsonl.gz"
[sample]
metrics_n = {n}
explain_n = {explain_n}
seed = 7
[[models]]
name = "ref"
source = "{model}"
role = "reference"
{extra}[predict]
max_length = 128
batch_size = 8
[explain]
max_evals = {max_evals}
batch_size = 32
seed = 0
noise_seed = 1
""", encoding="utf-8")
    return path


# -- running and killing ------------------------------------------------------------------

@dataclass
class Attempt:
    round: int
    trigger: str             # "time 3.21s" | "after line 7 + 0.12s" | "none"
    outcome: str             # killed | completed | failed
    seconds: float
    last_line: str = ""
    rc: int | None = None
    problems: list[str] = field(default_factory=list)


def run_cmd(preset: Path, ws: Path, data: Path) -> list[str]:
    return [sys.executable, "-m", "engine.cli", "run", "--preset", str(preset),
            "--workspace", str(ws), "--data-path", str(data)]


def run_once(cmd: list[str], kill: tuple[str, float, float] | None) -> tuple[str, float, list[str], int | None, str]:
    """Run cmd; kill = ("time", seconds, 0) or ("line", index, delay) or None.
    Returns (outcome, seconds, progress lines, rc, stderr tail)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
    lines: list[tuple[float, str]] = []
    other: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip()
            if line.startswith("["):
                lines.append((time.monotonic(), line))
            else:
                other.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    killed = False
    while proc.poll() is None:
        now = time.monotonic()
        if kill is not None:
            mode, a, b = kill
            due = (mode == "time" and now - t0 >= a) or (
                mode == "line" and len(lines) > int(a) and now - lines[int(a)][0] >= b)
            if due:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                killed = True
                proc.wait()
                break
        time.sleep(0.005)
    reader.join(timeout=5)
    secs = time.monotonic() - t0
    rc = proc.returncode
    text = [l for _, l in lines]
    if killed and rc == -signal.SIGKILL:
        return "killed", secs, text, rc, "\n".join(other[-10:])
    return ("completed" if rc == 0 else "failed"), secs, text, rc, "\n".join(other[-20:])


def _run_inprocess(argv: list[str]) -> tuple[str, float, list[str], int | None, str]:
    """Like run_once without a kill, in this process; the progress lines are captured."""
    import contextlib
    import io

    from engine.cli import main as cli_main

    buf = io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stderr(buf):
        rc = cli_main(argv)
    secs = time.monotonic() - t0 + 3.0   # + the imports a subprocess pays (for the kill times)
    lines = [l for l in buf.getvalue().splitlines() if l.startswith("[")]
    return ("completed" if rc == 0 else "failed"), secs, lines, rc, buf.getvalue()[-2000:]


# -- checks ---------------------------------------------------------------------------------

def _connect(db: Path) -> sqlite3.Connection:
    if os.access(db.parent, os.W_OK):
        conn = sqlite3.connect(str(db), timeout=30)
    else:  # a read-only disk: no -shm can be made, nobody can write
        conn = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def check_whole(db: Path) -> list[str]:
    """Invariants that must hold at every moment, including right after a SIGKILL."""
    if not db.exists():
        return []
    problems = []
    conn = _connect(db)
    try:
        ic = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        if ic != ["ok"]:
            problems.append(f"integrity_check: {ic[:5]}")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return problems  # killed before the schema was written: an empty database is fine
        if "_sqlite_migrations" in tables and "predictions" not in tables:
            problems.append("migration table present but schema missing")
        if "predictions" not in tables:
            return problems
        fk = conn.execute("PRAGMA foreign_key_check").fetchall()
        if fk:
            problems.append(f"foreign_key_check: {len(fk)} rows, e.g. {tuple(fk[0])}")
        cols = [r[1] for r in conn.execute("PRAGMA table_info(predictions)")]
        nulls = conn.execute("SELECT COUNT(*) FROM predictions WHERE " +
                             " OR ".join(f"{c} IS NULL" for c in cols)).fetchone()[0]
        if nulls:
            problems.append(f"{nulls} prediction rows with NULL columns")
        bad = conn.execute("SELECT COUNT(*) FROM predictions WHERE p_pos < 0 OR p_pos > 1 OR p_pos != p_pos"
                           " OR pred NOT IN (0, 1) OR n_tokens < 1").fetchone()[0]
        if bad:
            problems.append(f"{bad} prediction rows with impossible values")
        # every explanation whole: n_tokens attribution rows at positions 0..n-1
        rows = conn.execute(
            "SELECT e.id, e.n_tokens, COUNT(a.position) AS n, MIN(a.position) AS lo, MAX(a.position) AS hi"
            " FROM explanations e LEFT JOIN attributions a ON a.explanation_id = e.id GROUP BY e.id").fetchall()
        for r in rows:
            if r["n"] != r["n_tokens"] or (r["n"] and (r["lo"] != 0 or r["hi"] != r["n"] - 1)):
                problems.append(f"explanation {r['id']}: {r['n']} token rows for n_tokens={r['n_tokens']}")
        orphans = conn.execute("SELECT COUNT(*) FROM attributions WHERE explanation_id NOT IN"
                               " (SELECT id FROM explanations)").fetchone()[0]
        if orphans:
            problems.append(f"{orphans} attribution rows without their explanation")
        dup = conn.execute("SELECT COUNT(*) FROM (SELECT 1 FROM explanations GROUP BY model_id, review_id,"
                           " settings_hash HAVING COUNT(*) > 1)").fetchone()[0]
        if dup:
            problems.append(f"{dup} duplicated explanations")
    except sqlite3.DatabaseError as exc:
        problems.append(f"database error: {exc}")
    finally:
        conn.close()
    return problems


def _table(conn: sqlite3.Connection, sql: str, key: tuple[str, ...]) -> dict[tuple, dict]:
    out = {}
    for r in conn.execute(sql):
        d = {k: r[k] for k in r.keys() if k not in VOLATILE}
        out[tuple(d[k] for k in key)] = d
    return out


def _close(a: object, b: object, tol: float) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        if math.isnan(a) and math.isnan(b):  # type: ignore[arg-type]
            return True
        return abs(a - b) <= tol * max(1.0, abs(a), abs(b))  # type: ignore[operator]
    return a == b


def snapshot(db: Path) -> dict[str, dict]:
    conn = _connect(db)
    try:
        snap = {
            "experiments": _table(conn, "SELECT * FROM experiments", ("name",)),
            "samples": _table(conn, "SELECT * FROM samples", ("experiment", "role", "review_id")),
            "reviews": _table(conn, "SELECT * FROM reviews", ("id",)),
            "models": _table(conn, "SELECT * FROM models", ("id",)),
            "experiment_models": _table(conn, "SELECT * FROM experiment_models", ("experiment", "name")),
            "predictions": _table(conn, "SELECT p.*, m.variant AS _variant FROM predictions p"
                                        " JOIN models m ON m.id = p.model_id",
                                  ("model_id", "review_id", "settings_hash")),
            "explanations": _table(conn, "SELECT e.*, m.variant AS _variant FROM explanations e"
                                         " JOIN models m ON m.id = e.model_id",
                                   ("model_id", "review_id", "settings_hash")),
        }
        tokens: dict[tuple, dict] = {}
        for key, e in snap["explanations"].items():
            eid = e.pop("id")
            for r in conn.execute("SELECT * FROM attributions WHERE explanation_id = ?", [eid]):
                d = {k: r[k] for k in r.keys() if k != "explanation_id"}
                d["_variant"] = e["_variant"]
                tokens[key + (d["position"],)] = d
        snap["attributions"] = tokens
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "faithfulness" in tables:   # engine.faithfulness (ERASER scores per explanation)
            snap["faithfulness"] = _table(
                conn, "SELECT f.*, m.variant AS _variant FROM faithfulness f JOIN models m ON m.id = f.model_id",
                ("model_id", "review_id", "settings_hash", "faith_hash"))
            for row in snap["faithfulness"].values():
                row.pop("explanation_id")   # a rowid: differs between runs
        return snap
    finally:
        conn.close()


def compare(ref: dict[str, dict], got: dict[str, dict]) -> tuple[list[str], dict[str, float]]:
    """Differences between two snapshots; also the largest numeric deviation per table."""
    problems: list[str] = []
    maxdev: dict[str, float] = {}
    for table, rows in ref.items():
        other = got.get(table, {})
        missing, extra = rows.keys() - other.keys(), other.keys() - rows.keys()
        if missing:
            problems.append(f"{table}: {len(missing)} rows missing, e.g. {sorted(missing)[0]}")
        if extra:
            problems.append(f"{table}: {len(extra)} unexpected rows, e.g. {sorted(extra)[0]}")
        for key in rows.keys() & other.keys():
            a, b = rows[key], other[key]
            tol = TOL_INT8 if "int8" in str(a.get("_variant", "")) else TOL_FP32
            for col in a:
                if col == "id" and table == "explanations":
                    continue
                x, y = a[col], b.get(col)
                if isinstance(x, float) and isinstance(y, float) and not (math.isnan(x) or math.isnan(y)):
                    maxdev[table] = max(maxdev.get(table, 0.0), abs(x - y))
                if not _close(x, y, tol):
                    problems.append(f"{table} {key}: {col} {x!r} != {y!r}")
                    break
    return problems[:50], maxdev


# -- the harness ------------------------------------------------------------------------------

@dataclass
class Report:
    kills: int = 0
    rounds: int = 0
    completed_runs: int = 0
    reference_seconds: float = 0.0
    reference_rows: dict[str, int] = field(default_factory=dict)
    max_deviation: dict[str, float] = field(default_factory=dict)
    kill_points: dict[str, int] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def _phase(line: str) -> str:
    return line[1:line.index("]")] if line.startswith("[") and "]" in line else "startup"


def harness(work: Path, kills: int, seed: int, *, per_class: int = 60, explain_n: int = 6,
            max_evals: int = 40, variants: tuple[str, ...] = ("int8", "prune:0.3"),
            model: Path | None = None, log=print, inprocess_reference: bool = False) -> Report:
    t_start = time.monotonic()
    rep = Report()
    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    model = build_model(model or work / "tiny-model")
    data_dir = work / "data"
    write_data(data_dir, per_class)
    n = 2 * per_class
    preset = write_preset(work / "crash.toml", model, n, explain_n, max_evals, variants)

    ref_ws = work / "ws-reference"
    if ref_ws.exists():
        import shutil
        shutil.rmtree(ref_ws)
    if inprocess_reference:  # saves the imports when the caller has them (pytest)
        outcome, secs, ref_lines, rc, err = _run_inprocess(run_cmd(preset, ref_ws, data_dir)[3:])
    else:
        outcome, secs, ref_lines, rc, err = run_once(run_cmd(preset, ref_ws, data_dir), None)
    if outcome != "completed":
        rep.problems.append(f"reference run failed (rc {rc}): {err}")
        return rep
    rep.reference_seconds = secs
    ref_snap = snapshot(ref_ws / "shapdiff.db")
    rep.reference_rows = {k: len(v) for k, v in ref_snap.items()}
    log(f"reference run: {secs:.1f} s, {len(ref_lines)} progress lines, rows {rep.reference_rows}")
    n_models = 1 + len(variants)
    if rep.reference_rows["predictions"] != n_models * n:
        rep.problems.append(f"reference run stored {rep.reference_rows['predictions']} predictions, "
                            f"expected {n_models * n}")

    round_no = 0
    while rep.kills < kills:
        round_no += 1
        rep.rounds = round_no
        ws = work / f"ws-round{round_no}"
        if ws.exists():
            import shutil
            shutil.rmtree(ws)
        for _ in range(kills * 3 + 5):  # restarts within the round
            if rep.kills < kills:
                if rng.random() < 0.3:
                    kill = ("time", rng.uniform(0.2, max(0.5, 0.9 * secs)), 0.0)
                    trigger = f"time {kill[1]:.2f}s"
                else:
                    idx = rng.randrange(max(1, len(ref_lines)))
                    kill = ("line", idx, rng.uniform(0.0, 0.4))
                    trigger = f"after line {idx} + {kill[2]:.2f}s"
            else:
                kill, trigger = None, "none"
            outcome, s, lines, rc, err = run_once(run_cmd(preset, ws, data_dir), kill)
            att = Attempt(round_no, trigger, outcome, round(s, 2), lines[-1] if lines else "", rc)
            if outcome == "killed":
                rep.kills += 1
                ph = _phase(att.last_line)
                rep.kill_points[ph] = rep.kill_points.get(ph, 0) + 1
            att.problems = check_whole(ws / "shapdiff.db")
            if outcome == "failed":
                att.problems.append(f"run failed after a kill (rc {rc}): {err}")
            rep.attempts.append(att)
            log(f"round {round_no}: {outcome:<9} {trigger:<24} {s:5.1f}s  last: {att.last_line[:70]}"
                + (f"  PROBLEMS: {att.problems}" if att.problems else ""))
            rep.problems += [f"round {round_no} attempt {len(rep.attempts)}: {p}" for p in att.problems]
            if outcome in ("completed", "failed"):
                break
        if outcome != "completed":
            continue
        rep.completed_runs += 1
        problems, dev = compare(ref_snap, snapshot(ws / "shapdiff.db"))
        for k, v in dev.items():
            rep.max_deviation[k] = max(rep.max_deviation.get(k, 0.0), v)
        rep.problems += [f"round {round_no} vs reference: {p}" for p in problems]
        log(f"round {round_no}: final tables {'equal the reference' if not problems else 'DIFFER'}"
            f" (max deviation {dev})")
    rep.seconds = round(time.monotonic() - t_start, 1)
    return rep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--small", action="store_true",
                    help="the CI size: 20+20 reviews, 2 explained, the model and its int8 variant")
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--explain-n", type=int, default=6)
    ap.add_argument("--max-evals", type=int, default=40)
    ap.add_argument("--zoo-kills", type=int, default=0, help="also kill a tiny zoo build this many times")
    ap.add_argument("--workdir", help="keep the workspaces here (default: a temporary folder)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    variants = ("int8", "prune:0.3")
    if args.small:
        args.per_class, args.explain_n, args.max_evals, variants = 20, 2, 20, ("int8",)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True))
    def go(work: Path) -> tuple[Report, Report | None]:
        r = harness(work, args.kills, args.seed, per_class=args.per_class, explain_n=args.explain_n,
                    max_evals=args.max_evals, variants=variants, log=log)
        z = zoo_harness(work, args.zoo_kills, args.seed, model=work / "tiny-model", log=log) if args.zoo_kills else None
        return r, z

    if args.workdir:
        rep, zrep = go(Path(args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="shapdiff-crash-") as tmp:
            rep, zrep = go(Path(tmp))
    ok = rep.ok and (zrep is None or zrep.ok)
    if args.json:
        print(json.dumps({"run": asdict(rep), "zoo": asdict(zrep) if zrep else None, "ok": ok}, indent=2, default=str))
    else:
        print(f"shapdiff run: {rep.kills} kills in {rep.rounds} rounds ({rep.completed_runs} completed and compared) "
              f"in {rep.seconds} s; kill points {rep.kill_points}; max deviation {rep.max_deviation}")
        if zrep:
            print(f"zoo build: {zrep.kills} kills, {zrep.completed_runs} completed builds, in {zrep.seconds} s")
        problems = rep.problems + (zrep.problems if zrep else [])
        print("OK: nothing lost, half-written or different" if ok else "FAILED:\n  " + "\n  ".join(problems))
    return 0 if ok else 1



# -- zoo builds ---------------------------------------------------------------------------------
# `python bench/crash_harness.py --zoo-kills N`: SIGKILL a tiny zoo build (teacher, then student)
# at random moments; after each kill, every model folder that the zoo would hand out must be
# complete and load; the staging folders are never handed out; the final build equals an
# uninterrupted one.

_ZOO_DRIVER = r'''
import dataclasses, json, sys
from pathlib import Path
from engine import zoo
from engine.workspace import Workspace
base, data, ws = sys.argv[1:4]
small = dict(n_train=32, max_length=32, epochs=2, batch_size=8, lr=1e-2, warmup=0.0, train_dtype="fp32",
             eval_n=24, eval_max_length=64, eval_dtype="fp32")
t = zoo.Recipe(base=base, **small)
s = zoo.Recipe(name="student", teacher=t, layers=(0, 1), alpha=1.0, **small)
w = Workspace(Path(ws))
print(json.dumps([str(zoo.ensure_model(w, r, data_path=Path(data))) for r in (t, s)]), flush=True)
'''


def _zoo_data(folder: Path) -> Path:
    rng = random.Random(1)
    pos, neg = ["great", "superb", "loved", "moving"], ["awful", "dull", "hated", "boring"]
    (folder / "imdb").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 80), ("test", 40)):
        with gzip.open(folder / "imdb" / f"{split}.jsonl.gz", "wt", encoding="utf-8") as fh:
            for i in range(n):
                lab = i % 2
                words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 30))] + [rng.choice(pos if lab else neg)] * 3
                rng.shuffle(words)
                fh.write(json.dumps({"id": f"{split}/{'pos' if lab else 'neg'}/{i}_{8 if lab else 2}",
                                     "rating": 8 if lab else 2, "label": lab, "text": " ".join(words)}) + "\n")
    return folder


def check_zoo_models(models_dir: Path) -> list[str]:
    """Every folder the zoo would use is complete: card, config, weights that load."""
    problems = []
    if not models_dir.exists():
        return problems
    sys.path.insert(0, str(ROOT))
    from engine.errors import BadInput
    from engine.models import load_classifier

    for d in sorted(models_dir.iterdir()):
        if not d.is_dir() or d.name.startswith("."):
            continue      # staging folders (.NAME.tmp-PID) and locks are never used
        if not (d / "card.json").is_file():
            problems.append(f"{d.name}: a model folder without card.json is in place")
            continue
        try:
            json.loads((d / "card.json").read_text())
            load_classifier(str(d), device="cpu")
        except (BadInput, ValueError) as exc:
            problems.append(f"{d.name}: complete-looking folder does not load: {exc}")
    return problems


def _tree_hashes(models_dir: Path) -> dict[str, str]:
    sys.path.insert(0, str(ROOT))
    from engine.models import content_hash

    return {d.name: content_hash(d) for d in sorted(models_dir.iterdir()) if d.is_dir() and not d.name.startswith(".")}


def zoo_harness(work: Path, kills: int, seed: int, model: Path | None = None, log=print) -> Report:
    import shutil

    t_start = time.monotonic()
    rep = Report()
    rng = random.Random(seed + 1000)
    work.mkdir(parents=True, exist_ok=True)
    base = build_model(model or work / "tiny-model")
    data = _zoo_data(work / "zoo-data")
    driver = work / "zoo_driver.py"
    driver.write_text(_ZOO_DRIVER)

    def cmd(ws: Path) -> list[str]:
        return [sys.executable, str(driver), str(base), str(data), str(ws)]

    ref = work / "zoo-reference"
    shutil.rmtree(ref, ignore_errors=True)
    outcome, secs, _, rc, err = run_once(cmd(ref), None)
    if outcome != "completed":
        rep.problems.append(f"zoo reference build failed (rc {rc}): {err}")
        return rep
    rep.reference_seconds = secs
    ref_hashes = _tree_hashes(ref / "models")
    log(f"zoo reference build: {secs:.1f} s, models {sorted(ref_hashes)}")
    ws = work / "zoo-killed"
    shutil.rmtree(ws, ignore_errors=True)
    while rep.kills < kills:
        t = rng.uniform(0.5, 0.95 * secs)
        outcome, s, _, rc, err = run_once(cmd(ws), ("time", t, 0.0))
        probs = check_zoo_models(ws / "models")
        built = sorted(d.name for d in (ws / "models").iterdir() if d.is_dir()) if (ws / "models").exists() else []
        log(f"zoo: {outcome:<9} at {t:5.1f}s  folders now: {built}" + (f"  PROBLEMS {probs}" if probs else ""))
        rep.attempts.append(Attempt(0, f"time {t:.2f}s", outcome, round(s, 2), rc=rc, problems=probs))
        rep.problems += probs
        if outcome == "killed":
            rep.kills += 1
        elif outcome == "failed":
            rep.problems.append(f"zoo build failed after a kill (rc {rc}): {err}")
            break
        else:  # completed before the kill: start over in a fresh workspace
            rep.completed_runs += 1
            shutil.rmtree(ws, ignore_errors=True)
    outcome, s, _, rc, err = run_once(cmd(ws), None)
    if outcome != "completed":
        rep.problems.append(f"zoo build after the kills failed (rc {rc}): {err}")
    else:
        rep.completed_runs += 1
        got = _tree_hashes(ws / "models")
        if got != ref_hashes:
            rep.problems.append(f"built models differ from an uninterrupted build: {got} vs {ref_hashes}")
        rep.problems += check_zoo_models(ws / "models")
    rep.seconds = round(time.monotonic() - t_start, 1)
    return rep


if __name__ == "__main__":
    sys.exit(main())
