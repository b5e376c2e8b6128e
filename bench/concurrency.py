"""Reader and writer loops for the concurrency check (tests/test_reliability_concurrency.py).

    python bench/concurrency.py read DB SECONDS      # the TUI's read path in a loop
    python bench/concurrency.py write DB SECONDS     # explanations written (and replaced) in a loop

The reader opens the store the way the TUI does and, until SECONDS pass, reads every
experiment's metrics and every stored explanation with the engine's read functions; it
checks that each explanation it sees is whole (n_tokens token rows, positions 0..n-1).
The writer stores explanations of many lengths through ``Store.put_explanation``,
replacing the same keys over and over (as a recompute does). Both print one JSON line:
counts of operations, of "database is locked" errors, of other errors and of partial
explanations seen.
"""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = {"id": "conc-model", "name": "conc", "source": "synthetic", "kind": "local", "variant": "",
         "content_hash": "0" * 64, "positive_index": 1, "label_names": ["NEGATIVE", "POSITIVE"],
         "max_length": 512, "n_params": 1, "card": None}
N_REVIEWS = 5


def _whole(e: dict) -> bool:
    toks = e["tokens"]
    return len(toks) == e["n_tokens"] and [t["position"] for t in toks] == list(range(len(toks)))


def reader(db: Path, seconds: float) -> dict:
    from engine.metrics import experiment_metrics
    from engine.store import open_store

    out = {"reads": 0, "explanations_seen": 0, "partial": 0, "locked": 0, "errors": 0, "first_error": "",
           "browse_seen": 0, "browse_partial": 0}
    try:
        from engine import browse
    except ImportError:  # pragma: no cover - the TUI's read queries are not built
        browse = None
    deadline = time.monotonic() + seconds
    store = None
    while time.monotonic() < deadline:
        try:
            if store is None:
                store = open_store(db)
            for exp in store.experiments():
                experiment_metrics(store, exp["name"])
                for m in store.experiment_models(exp["name"]):
                    for rid in store.sample_ids(exp["name"], "explain"):
                        e = store.explanation(m["id"], rid)
                        if e is not None:
                            out["explanations_seen"] += 1
                            out["partial"] += not _whole(e)
                        if e is not None and not _whole(e):
                            out.setdefault("partial_example", f"{len(e['tokens'])} tokens for n_tokens={e['n_tokens']}")
                if browse is not None:  # the TUI's read path
                    ctx = browse.load_context(store, exp["name"])
                    for m in ctx.models if ctx else ():
                        for rid in store.sample_ids(exp["name"], "explain"):
                            v = browse.explanation_view(store, ctx, m.name, rid)
                            if v is not None:
                                out["browse_seen"] += 1
                                out["browse_partial"] += len(v.tokens) != v.n_tokens
            out["reads"] += 1
        except Exception as exc:  # noqa: BLE001 - everything that would reach the user counts
            text = f"{type(exc).__name__}: {exc}"
            if "locked" in text or "busy" in text:
                out["locked"] += 1
            else:
                out["errors"] += 1
            if not out["first_error"]:
                out["first_error"] = text + "\n" + traceback.format_exc()[-1500:]
            time.sleep(0.05)
    if store is not None:
        store.close()
    return out


def writer(db: Path, seconds: float, seed: int = 0) -> dict:
    from engine.store import open_store

    rng = random.Random(seed)
    out = {"writes": 0, "locked": 0, "errors": 0, "first_error": ""}
    store = open_store(db)
    with store.db.atomic():
        store.db["reviews"].upsert_all(
            [{"id": f"conc:r{i}", "dataset": "conc", "split": "all", "source_id": f"r{i}", "label": i % 2,
              "rating": None, "text": "word " * 300, "n_chars": 1500, "encoding": "utf-8"}
             for i in range(N_REVIEWS)], pk="id")
    store.upsert_model(MODEL)
    ids = [f"conc:r{i}" for i in range(N_REVIEWS)]
    store.put_experiment("conc", {"explain": {"seed": 0}}, "conc", "conc", 0, N_REVIEWS, N_REVIEWS)
    store.db["samples"].delete_where("experiment = ?", ["conc"])
    with store.db.atomic():
        store.db["samples"].insert_all(
            [{"experiment": "conc", "role": role, "review_id": rid, "ordinal": i}
             for role in ("metrics", "explain") for i, rid in enumerate(ids)])
    store.set_experiment_models("conc", [{"name": "conc", "model_id": MODEL["id"], "role": "reference"}])
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        n = rng.randint(1, 300)
        i = rng.randrange(N_REVIEWS)
        row = {"model_id": MODEL["id"], "review_id": f"conc:r{i}", "settings_hash": "conc",
               "settings": {"seed": 0}, "output": "logit", "base_value": 0.0, "fx": 0.0,
               "additivity_error": 0.0, "additivity_ok": 1, "max_evals": 10, "evals_used": 10,
               "n_tokens": n, "truncated": 0, "warning": None, "device": "cpu", "versions": {},
               "seconds": 0.0}
        toks = [{"position": p, "token": "word", "start": 5 * p, "end": 5 * p + 4, "value": rng.random(),
                 "special": 0} for p in range(n)]
        try:
            store.put_explanation(row, toks)
            out["writes"] += 1
        except Exception as exc:  # noqa: BLE001
            text = f"{type(exc).__name__}: {exc}"
            out["locked" if "locked" in text else "errors"] += 1
            out["first_error"] = out["first_error"] or text
        time.sleep(rng.uniform(0, 0.01))
    store.close()
    return out


def main(argv: list[str]) -> int:
    role, db, seconds = argv[0], Path(argv[1]), float(argv[2])
    res = reader(db, seconds) if role == "read" else writer(db, seconds)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
