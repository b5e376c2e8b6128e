"""engine.compare: agreement, magnitude, bootstrap, noise floor, triage, bad input, demo end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engine import compare
from engine.compare import (
    METRICS, agreement_metrics, bootstrap_mean_ci, bootstrap_ratio_ci, pair_report, review_agreement, triage,
)
from engine.config import parse_preset
from engine.errors import BadInput
from engine.jobs import explain_hash
from engine.predict import predict_settings
from engine.provenance import settings_hash
from engine.store import open_store
from engine.words import explanation_words


# -- synthetic experiments ----------------------------------------------------------------

def _tokens(values, words=None):
    words = words or [f"w{j}" for j in range(len(values))]
    text = " ".join(words)
    rows = [{"position": 0, "token": "[CLS]", "start": 0, "end": 0, "value": 0.0, "special": 1}]
    pos = 0
    for j, (w, v) in enumerate(zip(words, values)):
        rows.append({"position": j + 1, "token": w, "start": pos, "end": pos + len(w), "value": float(v), "special": 0})
        pos += len(w) + 1
    rows.append({"position": len(words) + 1, "token": "[SEP]", "start": len(text), "end": len(text),
                 "value": 0.0, "special": 1})
    return text, rows


def _expl(mid, rid, shash, rows, base=0.0, fx=None):
    vals = [r["value"] for r in rows]
    return {"model_id": mid, "review_id": rid, "settings_hash": shash, "settings": {"seed": 0}, "output": "logit",
            "base_value": base, "fx": base + sum(vals) if fx is None else fx, "additivity_error": 0.0,
            "additivity_ok": 1, "max_evals": 10, "evals_used": 10, "n_tokens": len(rows), "truncated": 0,
            "warning": None, "device": "cpu", "versions": {}, "seconds": 0.0}


def make_experiment(tmp_path, ref, other, noise=None, *, labels=None, preds_ref=None, preds_other=None,
                    other_fx=None):
    """A store with models A (reference) and B; ``ref``/``other``/``noise``: lists of value lists."""
    n = len(ref)
    preset = parse_preset({"name": "t", "sample": {"metrics_n": max(2, n), "explain_n": n, "seed": 0},
                           "models": [{"name": "A", "source": "x:A", "role": "reference"},
                                      {"name": "B", "source": "x:B"}]})
    store = open_store(tmp_path / "shapdiff.db")
    ids = [f"r{i:03d}" for i in range(n)]
    labels = labels or [i % 2 for i in range(n)]
    texts = {}
    reviews = []
    for i, rid in enumerate(ids):
        text, _ = _tokens(ref[i])
        texts[rid] = text
        reviews.append({"id": rid, "dataset": "t", "split": "test", "source_id": rid, "label": labels[i],
                        "rating": None, "text": text, "n_chars": len(text), "encoding": "utf-8"})
    store.put_experiment("t", preset.to_dict(), preset.hash(), "t", 0, n, n)
    store.put_sample("t", reviews, ids)
    main, nh = explain_hash(preset), explain_hash(preset, preset.explain.noise_seed)
    p_hash = settings_hash(predict_settings(preset.predict.max_length, preset.predict.dtype))
    entries = []
    for name, role, vals, preds in (("A", "reference", ref, preds_ref), ("B", "compressed", other, preds_other)):
        mid = f"id-{name}"
        store.upsert_model({"id": mid, "name": name, "source": f"x:{name}", "kind": "demo", "variant": "",
                            "content_hash": mid, "positive_index": 1, "label_names": ["NEGATIVE", "POSITIVE"],
                            "max_length": 256, "n_params": 0, "card": None})
        entries.append({"name": name, "model_id": mid, "role": role})
        preds = preds or labels
        store.put_predictions([{"model_id": mid, "review_id": rid, "settings_hash": p_hash, "settings": {},
                                "logit_neg": 0.0, "logit_pos": 0.0, "p_pos": 0.9 if preds[i] else 0.2,
                                "pred": preds[i], "n_tokens": 3, "truncated": 0, "device": "cpu", "versions": "{}",
                                "seconds": 0.0, "created_at": "2026-01-01T00:00:00+00:00"} for i, rid in enumerate(ids)])
        for i, rid in enumerate(ids):
            if vals[i] is None:
                continue
            _, rows = _tokens(vals[i])
            fx = other_fx[i] if (name == "B" and other_fx is not None) else None
            store.put_explanation(_expl(mid, rid, main, rows, fx=fx), rows)
        if name == "A" and noise is not None:
            for i, rid in enumerate(ids):
                _, rows = _tokens(noise[i])
                store.put_explanation(_expl(mid, rid, nh, rows), rows)
    store.set_experiment_models("t", entries)
    return store


def no_nan(obj) -> None:
    json.dumps(obj, allow_nan=False)


# -- per-review agreement ------------------------------------------------------------------

def test_identical_vectors_agree_fully() -> None:
    v = [0.5, -1.2, 0.3, 2.0, -0.1, 0.05, 0.7, -0.9, 1.1, 0.2, -0.4, 0.6]
    m = agreement_metrics(v, v)
    assert all(m[k] == pytest.approx(1.0) for k in METRICS)


def test_reversed_ranking_gives_minus_one() -> None:
    a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    m = agreement_metrics(a, a[::-1])
    assert m["spearman"] == pytest.approx(-1.0)
    assert m["kendall"] == pytest.approx(-1.0)


def test_topk_on_a_hand_made_case() -> None:
    # |a| ranks: f0 > f1 > f2 > f3 > f4 > f5 ... ; |b| ranks: f0 > f5 > f2 > f6 > f1 > ...
    a = [10, 9, -8, 7, 6, 5, 4, 0.3, 0.2, 0.1]
    b = [10, 6, 8, 0.1, 0.2, 9, 7, 0.3, -5, 4]
    m = agreement_metrics(a, b)
    # top-5: a {0,1,2,3,4}, b {0,5,2,6,1}: common {0,1,2}
    assert m["feature5"] == pytest.approx(3 / 5)
    assert m["jaccard5"] == pytest.approx(3 / 7)
    assert m["rank5"] == pytest.approx(2 / 5)          # positions 0 (f0) and 2 (f2) match
    assert m["ksign5"] == pytest.approx(2 / 5)         # f2 has opposite signs
    assert m["signed_rank5"] == pytest.approx(1 / 5)   # only f0 matches in rank and sign
    assert m["sign5"] == pytest.approx(4 / 5)          # a's top-5: f2 differs in sign in b


def test_small_inputs_and_all_zero_give_none() -> None:
    assert all(v is None for v in agreement_metrics([], []).values())
    assert all(v is None for v in agreement_metrics([0, 0, 0], [1, 2, 3]).values())
    m = agreement_metrics([1.0], [2.0])
    assert m["spearman"] is None and m["feature5"] == 1.0
    with pytest.raises(BadInput):
        agreement_metrics([1, 2], [1, 2, 3])


def test_review_agreement_word_level_sums_subword_tokens() -> None:
    text = "an unbelievable film"
    toks = [{"position": 0, "token": "[CLS]", "start": 0, "end": 0, "value": 9.0, "special": 1},
            {"position": 1, "token": "an", "start": 0, "end": 2, "value": 0.1, "special": 0},
            {"position": 2, "token": "un", "start": 3, "end": 5, "value": 0.5, "special": 0},
            {"position": 3, "token": "##believ", "start": 5, "end": 11, "value": 0.25, "special": 0},
            {"position": 4, "token": "##able", "start": 11, "end": 15, "value": 0.25, "special": 0},
            {"position": 5, "token": "film", "start": 16, "end": 20, "value": -0.3, "special": 0},
            {"position": 6, "token": "[SEP]", "start": 20, "end": 20, "value": 9.0, "special": 1}]
    words = explanation_words(toks, text)
    assert [(w.text, round(w.value, 6)) for w in words] == [("an", 0.1), ("unbelievable", 1.0), ("film", -0.3)]
    assert [w.text for w in explanation_words(toks)] == ["an", "unbelievable", "film"]  # without the text
    # another tokenizer, whole words: agrees with the first at word level
    other = [dict(t) for t in toks[:2]] + [
        {"position": 2, "token": "unbelievable", "start": 3, "end": 15, "value": 2.0, "special": 0},
        {"position": 3, "token": "film", "start": 16, "end": 20, "value": -0.6, "special": 0}]
    row = review_agreement({"tokens": toks}, {"tokens": other}, "word", text=text, review_id="x")
    assert row.n_features == 3 and row.spearman == pytest.approx(1.0)
    tok = review_agreement({"tokens": toks}, {"tokens": other}, "token", review_id="x")
    assert tok.n_features == 2  # only "an" and "film" have the same span
    with pytest.raises(BadInput):
        review_agreement({"tokens": toks}, {"tokens": other}, "sentence")  # type: ignore[arg-type]


# -- bootstrap -----------------------------------------------------------------------------

def test_bootstrap_mean_ci_covers_true_mean_at_nominal_rate() -> None:
    rng = np.random.default_rng(1)
    reps, hits = 300, 0
    for i in range(reps):
        x = rng.exponential(2.0, 60)   # skewed; true mean 2
        lo, hi = bootstrap_mean_ci(x, n_boot=400, seed=i)
        hits += lo <= 2.0 <= hi
    assert 0.89 <= hits / reps <= 0.98


def test_bootstrap_ratio_ci_covers_true_feature_mean() -> None:
    rng = np.random.default_rng(2)
    reps, hits = 200, 0
    for i in range(reps):
        counts = rng.integers(0, 4, 50).astype(float)
        sums = np.array([rng.normal(0.7, 0.3, int(c)).__abs__().sum() for c in counts])
        # the true mean of |N(0.7, 0.3)|
        lo, hi = bootstrap_ratio_ci(sums[:, None], counts[:, None], n_boot=400, seed=i)
        hits += lo[0] <= 0.7008 <= hi[0]
    assert 0.88 <= hits / reps <= 0.99


def test_bootstrap_undefined_for_one_value() -> None:
    assert bootstrap_mean_ci([1.0]) == (None, None)
    assert bootstrap_mean_ci([]) == (None, None)


# -- the pair report -------------------------------------------------------------------------

def _random_vals(rng, n, length=12):
    return [list(rng.normal(0, 1, length)) for _ in range(n)]


def test_scaling_by_two_shows_in_raw_not_normalised(tmp_path) -> None:
    rng = np.random.default_rng(0)
    ref = _random_vals(rng, 15)
    other = [[2 * v for v in vals] for vals in ref]
    noise = [[v + rng.normal(0, 0.05) for v in vals] for vals in ref]
    with make_experiment(tmp_path, ref, other, noise) as store:
        rep = pair_report(store, "t", n_boot=200, min_freq=1)
    raw, norm = rep.magnitude.raw, rep.magnitude.normalised
    assert raw.n == 15 and raw.larger == "other" and raw.p_value < 0.001 and raw.effect_size == pytest.approx(1.0)
    assert raw.median_ratio == pytest.approx(2.0)
    assert raw.exceeds_floor is True and raw.real is True
    assert norm.mean_diff == pytest.approx(0.0, abs=1e-12)
    assert norm.larger is None and norm.p_value is None and norm.real is not True
    # the rankings are identical: full agreement, at word and token level
    for lvl in ("word", "token"):
        assert rep.agreement[lvl].summary["spearman"].mean == pytest.approx(1.0)
        assert rep.agreement[lvl].summary["jaccard5"].mean == pytest.approx(1.0)
    # ... and the floor (noise) is below 1: the pair agrees more than the floor, nothing real
    assert rep.agreement["word"].floor["spearman"].real is False
    no_nan(rep.to_dict())
    no_nan(rep.summary_dict())


def test_disagreement_beyond_the_floor_is_flagged_real(tmp_path) -> None:
    rng = np.random.default_rng(3)
    ref = _random_vals(rng, 20)
    other = [list(rng.permutation(vals)) for vals in ref]                 # unrelated ranking
    noise = [[v + rng.normal(0, 0.05) for v in vals] for vals in ref]   # the reference is stable
    with make_experiment(tmp_path, ref, other, noise) as store:
        rep = pair_report(store, "t", n_boot=300)
    fl = rep.agreement["word"].floor["spearman"]
    assert fl.floor_mean > 0.95 and fl.pair_mean < 0.6
    assert fl.real is True and fl.p_value < 0.01
    assert rep.noise_n == 20


def test_splits_triage_and_flips(tmp_path) -> None:
    rng = np.random.default_rng(4)
    ref = _random_vals(rng, 6)
    other = [list(vals) for vals in ref]
    other[2] = [-v for v in ref[2]]                   # review 2: reversed ranking
    labels = [0, 1, 0, 1, 0, 1]
    preds_other = [0, 1, 0, 0, 0, 1]                  # review 3 flips
    with make_experiment(tmp_path, ref, other, labels=labels, preds_other=preds_other) as store:
        rep = pair_report(store, "t", n_boot=100)
        rows = triage(store, "t", "A", "B")
        rows_all = triage(store, "t", "A", "B", include_unexplained=True)
    assert [r.review_id for r in rows[:2]] == ["r003", "r002"]
    assert rows[0].flip and not rows[1].flip and rows[1].spearman < 0
    assert rows[0].conf_ref == pytest.approx(0.9) and rows[0].conf_other == pytest.approx(0.8)
    assert [r.review_id for r in rep.triage] == [r.review_id for r in rows]
    assert len(rows_all) == len(rows)
    splits = rep.agreement["word"].splits
    assert splits["flip"]["flipped"]["n"] == 1 and splits["flip"]["same prediction"]["n"] == 5
    assert splits["class"]["negative"]["n"] == 3
    assert splits["other_correct"]["wrong"]["n"] == 1
    assert "no noise floor" in " ".join(rep.notes)
    assert rep.agreement["word"].noise is None and rep.agreement["word"].floor == {}
    no_nan(rep.to_dict())


def test_top_features_and_differences(tmp_path) -> None:
    # word w0 is big for both; w1 grows in B
    ref = [[3.0, 0.5, 0.1, -0.2] for _ in range(8)]
    other = [[3.0, 1.5, 0.1, -0.2] for _ in range(8)]
    with make_experiment(tmp_path, ref, other) as store:
        rep = pair_report(store, "t", n_boot=100, min_freq=5, top_n=3)
    assert [f.feature for f in rep.top_features["A"]] == ["w0", "w1", "w3"]
    assert rep.top_features["A"][0].mean_abs == pytest.approx(3.0) and rep.top_features["A"][0].count == 8
    d = rep.differences[0]
    assert d.feature == "w1" and d.diff == pytest.approx(1.0) and d.ci_low == pytest.approx(1.0)
    assert rep.distribution["A"].n == 32 and sum(rep.distribution["B"].hist_counts) == 32
    assert "values" not in rep.distribution["A"].to_dict()


# -- bad input --------------------------------------------------------------------------------

def test_pair_with_no_common_reviews_is_a_clear_error(tmp_path) -> None:
    ref = [[1.0, 2.0], [2.0, 1.0]]
    with make_experiment(tmp_path, ref, [None, None]) as store:
        with pytest.raises(BadInput, match="no review explained by both"):
            pair_report(store, "t")


def test_unknown_model_experiment_or_level(tmp_path) -> None:
    ref = [[1.0, 2.0], [2.0, 1.0]]
    with make_experiment(tmp_path, ref, ref) as store:
        with pytest.raises(BadInput, match="no model named 'C'"):
            pair_report(store, "t", "A", "C")
        with pytest.raises(BadInput, match="no experiment"):
            pair_report(store, "nope")
        with pytest.raises(BadInput, match="itself"):
            pair_report(store, "t", "A", "A")
        with pytest.raises(BadInput, match="level"):
            pair_report(store, "t", level="sentence")  # type: ignore[arg-type]


def test_single_review_gives_none_not_nan(tmp_path) -> None:
    with make_experiment(tmp_path, [[1.0, -2.0, 0.5]], [[2.0, -1.0, 0.1]]) as store:
        rep = pair_report(store, "t", n_boot=50, min_freq=1)
    assert rep.n_reviews == 1
    assert rep.magnitude.raw.p_value is None and rep.magnitude.raw.diff_ci_low is None
    s = rep.agreement["word"].summary["spearman"]
    assert s.mean == pytest.approx(compare._rank_corr(np.array([1.0, -2, 0.5]), np.array([2.0, -1, 0.1]))[0])
    assert s.ci_low is None
    assert any("single common review" in n for n in rep.notes)
    no_nan(rep.to_dict())


def test_all_zero_attributions_give_none(tmp_path) -> None:
    zeros = [[0.0, 0.0, 0.0] for _ in range(4)]
    with make_experiment(tmp_path, zeros, zeros, zeros, other_fx=[0.0] * 4) as store:
        rep = pair_report(store, "t", n_boot=50)
    assert all(rep.agreement["word"].summary[m].mean is None for m in METRICS)
    assert rep.magnitude.raw.p_value is None and rep.magnitude.normalised.n == 0
    assert all(r.note == "all-zero attributions" for r in rep.agreement["word"].rows)
    assert any("all attributions are zero" in n for n in rep.notes)
    no_nan(rep.to_dict())
    text = compare.format_report(rep)
    assert "n/a" in text and "nan" not in text.lower()


# -- the demo workspace, end to end -------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory):
    from engine.demo import build_demo_workspace

    root = tmp_path_factory.mktemp("demo")
    build_demo_workspace(root, 40, 16)
    return root


def test_demo_pair_report_end_to_end(demo_ws) -> None:
    from engine.figures import pair_figures

    with open_store(demo_ws / "shapdiff.db") as store:
        rep = pair_report(store, None, None, "student", n_boot=200)
        reps = compare.pair_reports(store, n_boot=100)
    assert (rep.ref, rep.other, rep.n_reviews, rep.noise_n) == ("teacher", "student", 16, 16)
    # the demo's student has 1.35x the teacher's values and a 1.35x logit gap
    assert rep.magnitude.raw.larger == "other" and rep.magnitude.raw.real is True
    assert rep.magnitude.normalised.real is not True
    assert rep.faithfulness == {"teacher": None, "student": None}
    assert [r.other for r in reps] == ["student", "teacher-int8"]
    no_nan(rep.to_dict())
    keys = [f.key for f in pair_figures(rep)]
    assert keys[:4] == ["top_features-teacher", "top_features-student", "distribution", "top_differences"]
    assert "agreement-spearman" in keys
    assert all(math.isfinite(v) for f in pair_figures(rep) for s in f.series for v in s.y)


def test_cli_compare_json_and_text(demo_ws, capsys) -> None:
    from engine.cli import main

    assert main(["compare", "--workspace", str(demo_ws), "--json", "--n-boot", "100"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [p["other"] for p in out["pairs"]] == ["student", "teacher-int8"]
    p = out["pairs"][0]
    for k in ("statistic", "p_value", "effect_size"):
        assert k in p["magnitude"]["raw"] and k in p["magnitude"]["normalised"]
    assert set(p["agreement"]["word"]["mean"]) == set(METRICS)
    assert p["agreement"]["word"]["noise_floor"]["spearman"] is not None
    assert p["faithfulness"] == {"teacher": None, "student": None}
    assert main(["compare", "--workspace", str(demo_ws), "--other", "student", "--n-boot", "50"]) == 0
    text = capsys.readouterr().out
    assert "magnitude" in text and "noise floor" in text and "faithfulness" in text
    assert main(["compare", "--workspace", str(demo_ws), "--other", "nobody"]) == 2
    assert "no model named 'nobody'" in capsys.readouterr().err


def test_identical_noise_explanations_are_flagged(tmp_path) -> None:
    rng = np.random.default_rng(5)
    ref = _random_vals(rng, 5)
    other = [list(rng.permutation(v)) for v in ref]
    with make_experiment(tmp_path, ref, other, [list(v) for v in ref]) as store:
        rep = pair_report(store, "t", n_boot=50)
    assert rep.noise_identical and rep.summary_dict()["noise_identical"] is True
    assert any("noise floor is zero" in n for n in rep.notes)
    assert rep.agreement["word"].noise["spearman"].mean == pytest.approx(1.0)
