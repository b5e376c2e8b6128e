"""engine.explain on a tiny model: additivity, seeds, storage, resume, cancel, truncation,
agreement with shap's documented usage."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import ExplainSpec
from engine.errors import Cancelled
from engine.progress import CancelToken
from engine.provenance import settings_hash

TEXTS = {
    "r1": "A wonderful film. The acting was superb, and the story (mostly) held together!",
    "r2": "Terrible.\n\nI didn't like it at all: boring, slow and far too long.",
    "r3": "Un café crème with my friends 😀 was better than this movie... 2/10",
    "r4": "It is fine, I guess. Some scenes work; others don't.",
}


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    from engine.models import load_classifier

    return load_classifier(str(tiny_model_dir), name="tiny")


@pytest.fixture()
def store(tmp_path, loaded):
    from engine.store import open_store

    s = open_store(tmp_path / "x.db")
    reviews = [{"id": rid, "dataset": "t", "split": "test", "source_id": rid, "label": i % 2, "rating": None,
                "text": text, "n_chars": len(text), "encoding": "utf-8"}
               for i, (rid, text) in enumerate(TEXTS.items())]
    s.put_sample("t", reviews, list(TEXTS))
    s.upsert_model(loaded.store_row())
    yield s
    s.close()


def _spec(**kw):
    base = {"max_evals": 120, "seed": 0}
    base.update(kw)
    return ExplainSpec(**base)


def test_additivity_specials_and_stored_row(store, loaded):
    from engine.explain import explain_sample, explain_settings

    spec = _spec()
    res = explain_sample(store, loaded, list(TEXTS), spec, max_length=64)
    assert (res.computed, res.skipped) == (4, 0)
    h = settings_hash(explain_settings(spec, 64))
    assert store.explained_ids(loaded.id, h) == set(TEXTS)
    for rid in TEXTS:
        e = store.explanation(loaded.id, rid, h)
        vals = np.array([t["value"] for t in e["tokens"]])
        assert abs(vals.sum() - (e["fx"] - e["base_value"])) < 1e-6
        assert e["additivity_error"] < 1e-6 and e["additivity_ok"] == 1
        specials = [t for t in e["tokens"] if t["special"]]
        assert [t["token"] for t in specials] == ["[CLS]", "[SEP]"]
        assert all(t["value"] == 0.0 for t in specials)
        assert e["n_tokens"] == len(e["tokens"]) and e["truncated"] == 0
        assert e["settings"]["algorithm"] == "partition" and e["settings"]["mask_token"] == "[MASK]"
        assert e["settings"]["output"] == "logit" and e["settings"]["seed"] == 0
        assert e["max_evals"] == 120 and 2 < e["evals_used"] <= 120
        assert e["tokens_total"] == e["n_tokens"] and e["budget_per_token"] > 0
        text = TEXTS[rid]
        for t in e["tokens"]:
            if not t["special"]:
                assert 0 <= t["start"] < t["end"] <= len(text)
    # f(x) is the model's positive logit on the review
    import torch

    enc = loaded.tokenizer(TEXTS["r1"], return_tensors="pt")
    with torch.no_grad():
        logit = loaded.model(**enc).logits[0, loaded.positive_index].item()
    assert store.explanation(loaded.id, "r1", h)["fx"] == pytest.approx(logit, abs=1e-5)
    # a second run finds everything stored
    again = explain_sample(store, loaded, list(TEXTS), spec, max_length=64)
    assert (again.computed, again.skipped) == (0, 4)


def test_same_seed_same_values(loaded):
    from engine.explain import Explainer

    a = Explainer(loaded, _spec(seed=3), max_length=64).explain_text(TEXTS["r1"])
    b = Explainer(loaded, _spec(seed=3), max_length=64).explain_text(TEXTS["r1"])
    np.testing.assert_array_equal(a.values, b.values)
    assert a.base_value == b.base_value and a.fx == b.fx


@pytest.mark.parametrize("output", ["log-odds", "probability"])
def test_outputs(loaded, output):
    import torch

    from engine.explain import Explainer

    exp = Explainer(loaded, _spec(output=output), max_length=64).explain_text(TEXTS["r2"])
    enc = loaded.tokenizer(TEXTS["r2"], return_tensors="pt")
    with torch.no_grad():
        lg = loaded.model(**enc).logits[0].double()
    p = loaded.positive_index
    want = (lg[p] - lg[1 - p]).item() if output == "log-odds" else torch.softmax(lg, 0)[p].item()
    assert exp.fx == pytest.approx(want, abs=1e-5)
    assert exp.additivity_error < 1e-6


def test_full_mode_expands_every_cluster(loaded):
    from engine.explain import Explainer

    exp = Explainer(loaded, _spec(mode="full"), max_length=64).explain_text(TEXTS["r1"])
    m = len(exp.prepared.ids)
    assert exp.complete and exp.max_evals == 2 * m and exp.evals_used == 2 * m
    assert exp.additivity_error < 1e-6


def test_fast_mode_reports_budget_exhaustion(loaded):
    from engine.explain import Explainer, explanation_row

    exp = Explainer(loaded, _spec(max_evals=20), max_length=64).explain_text(TEXTS["r1"])
    assert not exp.complete and exp.evals_used == 20
    row = explanation_row(exp, model_id="m", review_id="r", settings={}, shash="h", output="logit", device="cpu")
    assert row["complete"] == 0 and row["warning"] is None
    assert row["budget_per_token"] == pytest.approx(20 / exp.prepared.n_features)


def test_truncation_recorded(store, loaded):
    from engine.explain import explain_review

    e = explain_review(store, loaded, "r1", _spec(), max_length=10)
    assert e["truncated"] == 1 and e["n_tokens"] == 10 and e["tokens_total"] > 10
    assert "truncated" in e["warning"]
    assert e["settings"]["max_length"] == 10
    assert e["tokens"][-1]["token"] == "[SEP]" and e["tokens"][-1]["special"] == 1
    assert abs(sum(t["value"] for t in e["tokens"]) - (e["fx"] - e["base_value"])) < 1e-6


def test_explain_review_replaces_or_reuses(store, loaded):
    from engine.explain import explain_review, recompute_review

    a = explain_review(store, loaded, "r2", _spec(), max_length=64)
    b = explain_review(store, loaded, "r2", _spec(), max_length=64, force=False)
    assert a["id"] == b["id"]
    c = recompute_review(store, loaded, "r2", _spec(), max_length=64)
    assert c["settings_hash"] == a["settings_hash"]
    assert [t["value"] for t in c["tokens"]] == [t["value"] for t in a["tokens"]]
    n = store.conn.execute("SELECT COUNT(*) FROM explanations WHERE review_id='r2'").fetchone()[0]
    assert n == 1


def test_failure_mid_run_leaves_no_partial_row_and_rerun_completes(store, loaded, monkeypatch):
    from engine import explain as ex

    real = ex.ModelFunction.__call__
    calls = {"n": 0}

    def flaky(self, ids):
        calls["n"] += 1
        if calls["n"] == 40:  # inside the second review (each takes ~20 model calls here)
            raise RuntimeError("boom")
        return real(self, ids)

    monkeypatch.setattr(ex.ModelFunction, "__call__", flaky)
    spec = _spec()
    with pytest.raises(RuntimeError, match="boom"):
        ex.explain_sample(store, loaded, list(TEXTS), spec, max_length=64)
    h = settings_hash(ex.explain_settings(spec, 64))
    done = store.explained_ids(loaded.id, h)
    assert 1 <= len(done) < 4
    # nothing partial: every stored explanation has all its token rows, no orphan tokens
    for rid in done:
        e = store.explanation(loaded.id, rid, h)
        assert len(e["tokens"]) == e["n_tokens"]
    orphans = store.conn.execute(
        "SELECT COUNT(*) FROM attributions WHERE explanation_id NOT IN (SELECT id FROM explanations)").fetchone()[0]
    assert orphans == 0
    monkeypatch.setattr(ex.ModelFunction, "__call__", real)
    res = ex.explain_sample(store, loaded, list(TEXTS), spec, max_length=64)
    assert res.computed == 4 - len(done) and res.skipped == len(done)
    assert store.explained_ids(loaded.id, h) == set(TEXTS)


def test_cancel_stops_between_reviews(store, loaded):
    from engine.explain import explain_sample, explain_settings

    token = CancelToken()
    seen = []

    def on_progress(p):
        seen.append(p)
        if p.done == 1:
            token.cancel()

    spec = _spec()
    with pytest.raises(Cancelled):
        explain_sample(store, loaded, list(TEXTS), spec, max_length=64, on_progress=on_progress, cancel=token)
    assert len(store.explained_ids(loaded.id, settings_hash(explain_settings(spec, 64)))) == 1
    assert all(p.stage == "explain" and p.task == "tiny" for p in seen)
    assert seen[-1].total == 4


def test_settings_hash_changes_with_result_affecting_settings():
    from engine.explain import explain_settings

    base = settings_hash(explain_settings(ExplainSpec(), 256))
    assert settings_hash(explain_settings(ExplainSpec(batch_size=8, device="cpu"), 256)) == base
    for other in (ExplainSpec(seed=1), ExplainSpec(max_evals=100), ExplainSpec(mode="full"),
                  ExplainSpec(output="log-odds"), ExplainSpec(dtype="bf16")):
        assert settings_hash(explain_settings(other, 256)) != base
    assert settings_hash(explain_settings(ExplainSpec(), 128)) != base


def test_partition_tree_matches_shap(loaded):
    from shap.maskers._text import partition_tree as shap_tree

    from engine.explain import _cluster_tokens, partition_tree, prepare_text

    for text in TEXTS.values():
        p = prepare_text(loaded.tokenizer, text, 64)
        toks = _cluster_tokens(p.segments)
        np.testing.assert_array_equal(partition_tree(toks, ["[SEP]"]), shap_tree(toks, ["[SEP]"]))


def test_matches_shap_documented_usage(loaded):
    """Same review, same budget: the engine's values rank tokens like shap's documented usage."""
    from engine.bench import documented_shap_values, spearman
    from engine.explain import Explainer

    for text in (TEXTS["r1"],):
        exp = Explainer(loaded, _spec(max_evals=300), max_length=64).explain_text(text)
        ours = {o: float(v) for o, v, s in zip(exp.prepared.offsets, exp.values, exp.prepared.special) if not s}
        theirs = documented_shap_values(loaded, text, max_evals=300, max_length=64)
        assert set(ours) == set(theirs)
        assert spearman(ours, theirs) > 0.9
        # both are additive over the same f(x) - base
        assert sum(ours.values()) == pytest.approx(sum(theirs.values()), rel=0.05, abs=1e-4)


def test_bf16_engine(loaded):
    """bf16 runs on a cast copy (the loaded fp32 model is untouched) and stays additive.
    (Its effect on values is measured on real weights by `shapdiff bench shap`.)"""
    import torch

    from engine.explain import Explainer

    ex = Explainer(loaded, _spec(max_evals=60, dtype="bf16"), max_length=64)
    assert ex.dtype == "bf16" and ex.settings["runtime_dtype"] == "bf16"
    assert next(ex.model_fn.model.parameters()).dtype == torch.bfloat16
    assert next(loaded.model.parameters()).dtype == torch.float32
    exp = ex.explain_text(TEXTS["r2"])
    assert exp.additivity_error < 1e-4


def test_bert_cls_shortcut_is_exact(loaded):
    import torch

    from engine.explain import ModelFunction

    fast = ModelFunction(loaded.model, loaded.positive_index, "logit")
    slow = ModelFunction(loaded.model, loaded.positive_index, "logit", shortcut=False)
    assert fast.forward_name == "bert-cls-last-layer" and slow.forward_name == "model"
    ids = torch.randint(1000, 5000, (5, 23)).numpy()
    np.testing.assert_allclose(fast(ids), slow(ids), atol=1e-5)


def test_cli_explain_one_review(tmp_path, tiny_model_dir, shared_data, capsys):
    import json

    from engine.cli import main
    from engine.config import load_preset
    from engine.jobs import explain_hash, run_experiment
    from engine.store import open_store
    from engine.workspace import Workspace

    (tmp_path / "p.toml").write_text(f"""
name = "tiny"
[sample]
metrics_n = 4
explain_n = 1
seed = 7
[[models]]
name = "ref"
source = "{tiny_model_dir}"
role = "reference"
[predict]
max_length = 32
[explain]
max_evals = 40
noise_seed = 1
""")
    preset = load_preset(tmp_path / "p.toml")
    ws = Workspace(tmp_path / "ws")
    run_experiment(preset, ws, data_path=shared_data, explain=False)
    with open_store(ws.db_path) as st:
        rid = st.sample_ids("tiny", "explain")[0]
    args = ["explain", "--workspace", str(ws.root), "--data-path", str(shared_data), "--model", "ref",
            "--review", rid, "--json", "--quiet"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["review_id"] == rid and out["truncated"] == 1 and out["n_tokens"] == 32
    assert out["settings_hash"] == explain_hash(preset)        # the pipeline finds it as stored
    assert sum(w["value"] for w in out["words"]) == pytest.approx(out["fx"] - out["base_value"], abs=1e-6)
    assert main(["explain", "--workspace", str(ws.root), "--model", "ref", "--review", rid, "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "additivity error" in text and "truncated" in text
    assert main(["explain", "--workspace", str(ws.root), "--model", "nope", "--review", rid]) == 2
    assert main(["explain", "--workspace", str(ws.root), "--model", "ref", "--review", "no-such-id"]) == 2
