"""engine.truncation: one cut for training, predictions, explanations and faithfulness."""

from __future__ import annotations

import pytest

from engine.config import ExplainSpec

LONG = ("It starts badly: " + "the plot wanders and nothing happens. " * 12
        + "But the last act is wonderful, moving and brilliant; I loved the ending.")


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    from engine.models import load_classifier

    return load_classifier(str(tiny_model_dir), name="tiny")


def test_kept_positions_head_and_head_tail():
    from engine.truncation import kept_positions

    special = [True] + [False] * 20 + [True]
    assert kept_positions(special, 30, "head+tail") == list(range(22))       # short: untouched
    assert kept_positions(special, 10, "head") == [0, 1, 2, 3, 4, 5, 6, 7, 8, 21]
    # budget 8 body tokens: 2 from the start, 6 from the end, both specials kept
    assert kept_positions(special, 10, "head+tail") == [0, 1, 2, 15, 16, 17, 18, 19, 20, 21]
    with pytest.raises(ValueError, match="unknown truncation"):
        kept_positions(special, 10, "middle")


def test_head_matches_the_tokenizers_own_truncation(loaded):
    from engine.truncation import encode

    tok = loaded.tokenizer
    (ids, total), = encode(tok, [LONG], 32, "head")
    assert ids == tok(LONG, truncation=True, max_length=32)["input_ids"]
    assert total == len(tok(LONG)["input_ids"]) > 32


def test_head_tail_prediction_sees_the_ending_and_explanation_agrees(loaded):
    """A head+tail prediction sees the review's last tokens; the explanation of the same
    settings explains exactly that input (f(x) equals the predicted logit) and records it."""
    from engine.explain import Explainer, explanation_row, prepare_text
    from engine.predict import predict_texts

    tok = loaded.tokenizer
    head, = predict_texts(loaded, [LONG], max_length=32, truncation="head")
    both, = predict_texts(loaded, [LONG], max_length=32, truncation="head+tail")
    assert head.truncated and both.truncated and head.n_tokens == both.n_tokens == 32
    assert head.logit_pos != pytest.approx(both.logit_pos, abs=1e-6)

    p = prepare_text(tok, LONG, 32, "head+tail")
    kept_text = [LONG[s:e] for (s, e), sp in zip(p.offsets, p.special) if not sp]
    assert "ending" in "".join(kept_text) and p.truncated and len(p.ids) == 32
    assert all(b[0] >= a[1] for a, b in zip(p.offsets[1:-2], p.offsets[2:-1]))  # increasing spans

    exp = Explainer(loaded, ExplainSpec(max_evals=60), max_length=32, truncation="head+tail").explain_text(LONG)
    assert exp.fx == pytest.approx(both.logit_pos, abs=1e-4)
    row = explanation_row(exp, model_id="m", review_id="r", settings={}, shash="h", output="logit", device="cpu")
    assert row["truncated"] == 1 and "(the first and last ones)" in row["warning"]


def test_settings_keys_unchanged_for_head(loaded):
    """Rows stored before truncation became a setting keep their keys; head+tail gets its own."""
    from engine.explain import explain_settings
    from engine.predict import predict_settings

    assert predict_settings(256, "fp32") == {"max_length": 256, "dtype": "fp32"}
    assert predict_settings(256, "fp32", "head+tail")["truncation"] == "head+tail"
    spec = ExplainSpec()
    assert "truncation" not in explain_settings(spec, 256)
    assert explain_settings(spec, 256, "head+tail")["truncation"] == "head+tail"


def test_faithfulness_realigns_a_head_tail_explanation(loaded):
    from engine.explain import Explainer, token_rows
    from engine.faithfulness import explanation_inputs

    exp = Explainer(loaded, ExplainSpec(max_evals=60), max_length=32, truncation="head+tail").explain_text(LONG)
    tokens = token_rows(exp)
    ids, special, values, unmatched = explanation_inputs(loaded.tokenizer, LONG, tokens, "head+tail")
    assert unmatched == 0 and len(ids) == 32
    assert ids == [int(i) for i in exp.prepared.ids]


def test_the_cut_middle_is_marked_in_the_tui_and_the_report():
    """A head+tail explanation leaves the review's middle unseen: both views say so, and a
    review without a cut gets no marker."""
    from engine.browse import Token
    from engine.report import coloured_text
    from tui.render import review_text

    text = "great start. the middle goes on and on. sad end"
    spans = [(0, 5), (6, 11), (11, 12), (40, 43), (44, 47)]
    toks = [Token(text[s:e], s, e, 0.5, False) for s, e in spans]
    shown = review_text(text, toks, 1.0, truncated=True)
    assert shown.plain.count("✂") == 2 and "the middle goes on and on." in shown.plain
    assert "✂" not in review_text(text, toks, 1.0, truncated=False).plain
    rows = [{"token": t.text, "start": t.start, "end": t.end, "value": t.value, "special": 0} for t in toks]
    html = coloured_text(text, rows, 1.0)
    assert 'class="unexplained" title="not seen by the model (truncated)"> the middle goes on and on. <' in html
