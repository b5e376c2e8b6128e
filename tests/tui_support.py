"""Shared helpers for the TUI tests: a small demo workspace with markup-looking reviews."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from engine.demo import build_demo_workspace
from engine.store import open_store

MARKUP_TEXT = "[red]x[/] is great, [/] then [link=https://example.com]click[/link] was awful [bold]"
MARKUP_ID = "demo:markup"
_WORD = re.compile(r"\w+|[^\w\s]")


def add_markup_review(db: Path, review_id: str = MARKUP_ID, text: str = MARKUP_TEXT) -> None:
    """Add a review whose text looks like Rich/Textual markup, predicted and explained by every
    model, with a confident prediction flip so it sorts first by disagreement."""
    store = open_store(db)
    try:
        exp = store.latest_experiment()
        models = store.experiment_models(exp)
        n = len(store.sample_ids(exp, "metrics"))
        with store.db.atomic():
            store.db["reviews"].insert({"id": review_id, "dataset": "demo", "split": "test", "source_id": "markup",
                                        "label": 1, "rating": None, "text": text, "n_chars": len(text),
                                        "encoding": "utf-8"})
            store.db["samples"].insert_all([
                {"experiment": exp, "role": "metrics", "review_id": review_id, "ordinal": n},
                {"experiment": exp, "role": "explain", "review_id": review_id, "ordinal": 10_000}])
        toks = [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]
        for k, m in enumerate(models):
            template = store.predictions(m["id"])[0]
            p = 0.99 if k == 0 else 0.01
            store.put_predictions([dict(template, review_id=review_id, p_pos=p, pred=int(p > 0.5),
                                        logit_pos=2.0 if p > 0.5 else -2.0, logit_neg=0.0)])
            eids = [r[0] for r in store.conn.execute(
                "SELECT id FROM explanations WHERE model_id = ? ORDER BY id", [m["id"]])]
            seen = set()
            for eid in eids:
                row = dict(next(store.db.query("SELECT * FROM explanations WHERE id = ?", [eid])))
                if row["settings_hash"] in seen:
                    continue
                seen.add(row["settings_hash"])
                vals = [0.9 if t == "great" else -0.9 if t == "awful" else 0.05 * (1 if k else -1) for t, _, _ in toks]
                tokens = [{"position": 0, "token": "[CLS]", "start": 0, "end": 0, "value": 0.0, "special": 1}]
                tokens += [{"position": i + 1, "token": t, "start": a, "end": b, "value": v, "special": 0}
                           for i, ((t, a, b), v) in enumerate(zip(toks, vals))]
                row.pop("id")
                row.update(review_id=review_id, fx=row["base_value"] + sum(vals), n_tokens=len(tokens))
                store.put_explanation(row, tokens)
    finally:
        store.close()


def make_workspace(root: Path, n_reviews: int = 40, n_explained: int = 12) -> Path:
    """A demo workspace in ROOT (returned) with one markup review added."""
    db = build_demo_workspace(root, n_reviews, n_explained)
    add_markup_review(db)
    return root


def copy_workspace(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "shapdiff.db", dst / "shapdiff.db")
    return dst


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory) -> Path:
    """The TUI tests' demo workspace, built once per test module (import it as a fixture)."""
    return make_workspace(tmp_path_factory.mktemp("tui") / "ws", 40, 12)


@pytest.fixture()
def ws(demo_ws, tmp_path) -> Path:
    """A private copy of the demo workspace for one test."""
    return copy_workspace(demo_ws, tmp_path / "ws")
