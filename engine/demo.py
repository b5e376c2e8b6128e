"""A synthetic workspace: realistic shapes, no model runs. For trying the app at once,
for the TUI's tests and snapshots, and for benchmarks at 25,000 reviews."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from engine.config import Preset, parse_preset
from engine.jobs import explain_hash
from engine.predict import predict_settings
from engine.provenance import settings_hash, versions
from engine.store import open_store

_POS = ["great", "wonderful", "superb", "moving", "brilliant", "fun", "charming", "best"]
_NEG = ["awful", "boring", "worst", "dull", "mess", "waste", "terrible", "bad"]
_NEUTRAL = ["the", "film", "movie", "plot", "actor", "scene", "was", "and", "a", "it", "story",
            "director", "ending", "of", "with", "but", "very", "really", "this", "script"]
_EXTRAS = ["[red]x[/]", "[/]", "[link=https://example.com]click[/link]", "café", "naïve", "🎬", "—"]
_WORD = re.compile(r"\w+|[^\w\s]")

MODELS = (("teacher", "reference", 1.0, 0.0), ("student", "compressed", 1.35, 0.25),
          ("teacher-int8", "compressed", 1.02, 0.08))


def demo_preset(n_reviews: int, n_explained: int) -> Preset:
    return parse_preset({
        "name": "demo",
        "description": "synthetic demo workspace (no model was run)",
        "sample": {"metrics_n": n_reviews, "explain_n": n_explained, "seed": 0},
        "models": [{"name": n, "source": f"demo:{n}", "role": r} for n, r, _, _ in MODELS],
    }, "demo")


def _text(rng: np.random.Generator, label: int, i: int) -> str:
    n = int(rng.integers(12, 60))
    lean = _POS if label else _NEG
    words = []
    for _ in range(n):
        u = rng.random()
        words.append(lean[rng.integers(len(lean))] if u < 0.15 else
                     (_POS + _NEG)[rng.integers(16)] if u < 0.2 else _NEUTRAL[rng.integers(len(_NEUTRAL))])
    if i % 7 == 3:
        words.insert(int(rng.integers(len(words))), _EXTRAS[(i // 7) % len(_EXTRAS)])
    text = " ".join(words).capitalize() + "."
    if i % 5 == 1:
        text = text.replace(" and ", ".\nAnd ", 1)
    return text


def _tokens(text: str) -> list[tuple[str, int, int]]:
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def build_demo_workspace(root: str | Path, n_reviews: int = 40, n_explained: int = 12, seed: int = 0) -> Path:
    """Write a complete synthetic experiment into ROOT/shapdiff.db; returns the db path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.Generator(np.random.PCG64(seed))
    preset = demo_preset(n_reviews, n_explained)
    db = root / "shapdiff.db"
    store = open_store(db)
    try:
        reviews = []
        for i in range(n_reviews):
            label = i % 2
            text = _text(rng, label, i)
            reviews.append({"id": f"demo:{i:05d}", "dataset": "demo", "split": "test", "source_id": f"{i:05d}",
                            "label": label, "rating": None, "text": text, "n_chars": len(text), "encoding": "utf-8"})
        store.put_experiment(preset.name, preset.to_dict(), preset.hash(), "demo:test", 0, n_reviews, n_explained)
        store.put_sample(preset.name, reviews, [r["id"] for r in reviews[:n_explained]])
        p_settings = predict_settings(preset.predict.max_length, preset.predict.dtype, preset.predict.truncation)
        p_hash = settings_hash(p_settings)
        main_hash = explain_hash(preset)
        noise_hash = explain_hash(preset, preset.explain.noise_seed)
        entries = []
        base_logits = rng.normal(0, 1.0, n_reviews)
        for name, role, scale, noise in MODELS:
            mid = settings_hash({"demo": name})
            store.upsert_model({"id": mid, "name": name, "source": f"demo:{name}", "kind": "demo", "variant": "",
                                "content_hash": mid, "positive_index": 1, "label_names": ["NEGATIVE", "POSITIVE"],
                                "max_length": 256, "n_params": 0, "card": {"demo": True}})
            entries.append({"name": name, "model_id": mid, "role": role})
            preds = []
            for i, r in enumerate(reviews):
                margin = (1.4 if r["label"] else -1.4) * scale + base_logits[i] * 1.6 + rng.normal(0, 0.4 + noise)
                p = float(1 / (1 + np.exp(-margin)))
                preds.append({"model_id": mid, "review_id": r["id"], "settings_hash": p_hash, "settings": p_settings,
                              "logit_neg": -margin / 2, "logit_pos": margin / 2, "p_pos": p, "pred": int(p >= 0.5),
                              "n_tokens": len(_tokens(r["text"])) + 2, "truncated": int(i % 11 == 5),
                              "device": "cpu", "versions": versions(), "seconds": 0.0, "created_at": "2026-01-01T00:00:00+00:00"})
            store.put_predictions(preds)
            seeds = [(main_hash, preset.explain.seed, 0.0)]
            if role == "reference":
                seeds.append((noise_hash, preset.explain.noise_seed, 0.05))
            for shash, s, jitter in seeds:
                for i, r in enumerate(reviews[:n_explained]):
                    toks = _tokens(r["text"])
                    vals = []
                    for t, _, _ in toks:
                        w = t.lower()
                        v = 0.8 if w in _POS else -0.8 if w in _NEG else 0.0
                        vals.append(scale * v + rng.normal(0, 0.05 + noise * 0.3) + rng.normal(0, jitter))
                    base = -0.1
                    fx = base + float(sum(vals))
                    rows = [{"position": 0, "token": "[CLS]", "start": 0, "end": 0, "value": 0.0, "special": 1}]
                    rows += [{"position": k + 1, "token": t.lower(), "start": a, "end": b, "value": float(v), "special": 0}
                             for k, ((t, a, b), v) in enumerate(zip(toks, vals))]
                    rows.append({"position": len(toks) + 1, "token": "[SEP]", "start": len(r["text"]),
                                 "end": len(r["text"]), "value": 0.0, "special": 1})
                    store.put_explanation({
                        "model_id": mid, "review_id": r["id"], "settings_hash": shash,
                        "settings": {"algorithm": "demo", "seed": s, "max_evals": 500, "output": "logit"},
                        "output": "logit", "base_value": base, "fx": fx, "additivity_error": 0.0,
                        "additivity_ok": 1, "max_evals": 500, "evals_used": 2 * len(toks), "n_tokens": len(rows),
                        "truncated": 0, "warning": None, "device": "cpu", "versions": versions(), "seconds": 0.0,
                        "created_at": "2026-01-01T00:00:00+00:00"}, rows)
        store.set_experiment_models(preset.name, entries)
    finally:
        store.close()
    return db
