"""engine.browse: the TUI's read queries (listing order, filters, pages, detail) on a demo workspace."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import browse
from engine.store import open_store
from tui_support import MARKUP_ID, MARKUP_TEXT, make_workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("browse") / "ws", 40, 12)


@pytest.fixture()
def store(ws):
    s = open_store(ws / "shapdiff.db")
    yield s
    s.close()


def test_context(store):
    ctx = browse.load_context(store)
    assert ctx.experiment == "demo"
    assert [m.name for m in ctx.models] == ["teacher", "student", "teacher-int8"]
    assert ctx.reference.name == "teacher"
    assert ctx.default_pair() == ("teacher", "student")
    assert ctx.n_reviews == 41 and ctx.n_explain == 13
    assert ctx.explain_seed == 0 and ctx.noise_seed == 1
    assert all(m.pred_hash for m in ctx.models)


def test_empty_store_has_no_context(tmp_path):
    s = open_store(tmp_path / "shapdiff.db")
    try:
        assert browse.load_context(s) is None
    finally:
        s.close()


def test_sorted_by_disagreement(store):
    ctx = browse.load_context(store)
    q = browse.ReviewQuery("teacher", "student")
    ids = browse.ordered_ids(store, ctx, q)
    assert len(ids) == 41 and ids[0] == MARKUP_ID
    rows = browse.rows(store, ctx, q, ids)
    scores = [r.disagreement for r in rows]
    assert scores == sorted(scores, reverse=True)
    asc = browse.ordered_ids(store, ctx, q.with_(descending=False))
    assert asc[-1] == MARKUP_ID


@pytest.mark.parametrize("sort, key", [("confidence_gap", lambda r: r.confidence_gap),
                                       ("length", lambda r: r.n_chars), ("sample", lambda r: -r.ordinal)])
def test_other_sorts(store, sort, key):
    ctx = browse.load_context(store)
    q = browse.ReviewQuery("teacher", "student", sort=sort, descending=sort != "sample")
    rows = browse.rows(store, ctx, q, browse.ordered_ids(store, ctx, q))
    vals = [key(r) for r in rows]
    assert vals == sorted(vals, reverse=True)


def test_filters(store):
    ctx = browse.load_context(store)
    q = browse.ReviewQuery("teacher", "student")
    all_rows = browse.rows(store, ctx, q, browse.ordered_ids(store, ctx, q))

    def ids(**kw):
        return set(browse.ordered_ids(store, ctx, q.with_(**kw)))

    assert ids(label=1) == {r.id for r in all_rows if r.label == 1}
    assert ids(label=0) == {r.id for r in all_rows if r.label == 0}
    assert ids(outcome="flips") == {r.id for r in all_rows if r.flip}
    both = {r.id for r in all_rows if r.ref_pred.pred == r.label and r.other_pred.pred == r.label}
    assert ids(outcome="both_correct") == both
    assert ids(outcome="any_wrong") == {r.id for r in all_rows} - both
    assert ids(outcome="ref_wrong") == {r.id for r in all_rows if r.ref_pred.pred != r.label}
    assert ids(outcome="other_wrong") == {r.id for r in all_rows if r.other_pred.pred != r.label}
    assert ids(explained_only=True) == {r.id for r in all_rows if r.explained}
    assert len(ids(explained_only=True)) == 13


def test_search_is_literal(store):
    ctx = browse.load_context(store)
    q = browse.ReviewQuery("teacher", "student")
    texts = {r: store.review(r)["text"] for r in browse.ordered_ids(store, ctx, q)}
    with_link = {r for r, t in texts.items() if "[link=" in t}
    assert MARKUP_ID in with_link and len(with_link) < len(texts)
    assert set(browse.ordered_ids(store, ctx, q.with_(search="[link="))) == with_link
    assert set(browse.ordered_ids(store, ctx, q.with_(search="LINK=HTTPS"))) == with_link   # case-insensitive
    assert browse.ordered_ids(store, ctx, q.with_(search="then [LINK=")) == [MARKUP_ID]
    assert browse.ordered_ids(store, ctx, q.with_(search="%")) == []                     # no wildcard
    assert browse.ordered_ids(store, ctx, q.with_(search="_")) == []


def test_pages_match_the_order(store):
    ctx = browse.load_context(store)
    q = browse.ReviewQuery("teacher", "teacher-int8", sort="length")
    ids = browse.ordered_ids(store, ctx, q)
    got = [r.id for off in range(0, len(ids), 7) for r in browse.page(store, ctx, q, off, 7)]
    assert got == ids
    row = browse.rows(store, ctx, q, ids[:1])[0]
    assert set(row.preds) == {"teacher", "student", "teacher-int8"}
    assert "\n" not in row.snippet


def test_unknown_model_is_bad_input(store):
    from engine.errors import BadInput

    ctx = browse.load_context(store)
    with pytest.raises(BadInput):
        browse.ordered_ids(store, ctx, browse.ReviewQuery("teacher", "nope"))


def test_detail_main_explanation_not_noise(store):
    ctx = browse.load_context(store)
    d = browse.review_detail(store, ctx, "demo:00000", ["teacher", "student"])
    assert set(d.explanations) == {"teacher", "student"}
    assert d.explanations["teacher"].settings.get("seed") == 0       # the main run, not the noise floor
    words = d.explanations["teacher"].level("word", d.text)
    toks = d.explanations["teacher"].level("token", d.text)
    assert all(not t.special for t in toks)
    assert abs(sum(t.value for t in words) - sum(t.value for t in toks)) < 1e-9
    assert d.max_abs(["teacher", "student"], "word") >= max(abs(t.value) for t in words)
    none = browse.review_detail(store, ctx, "demo:00030", ["teacher"])
    assert none.explanations == {} and set(none.preds) == {"teacher", "student", "teacher-int8"}
    assert browse.review_detail(store, ctx, "missing", ["teacher"]) is None


def test_markup_detail_text_is_data(store):
    ctx = browse.load_context(store)
    d = browse.review_detail(store, ctx, MARKUP_ID, ["teacher", "student"])
    assert d.text == MARKUP_TEXT
    pos, neg = browse.top_tokens(d.explanations["teacher"].level("word", d.text), 1)
    assert pos[0].text == "great" and neg[0].text == "awful"


def test_subword_merge_fallback():
    toks = [browse.Token("[CLS]", 0, 0, 0.0, True), browse.Token("un", 0, 2, 0.5, False),
            browse.Token("##believ", 2, 8, 0.25, False), browse.Token("##able", 8, 12, 0.25, False),
            browse.Token("film", 13, 17, -1.0, False)]
    words = browse._merge_touching(toks, "unbelievable film")
    assert [(w.text, w.value) for w in words] == [("unbelievable", 1.0), ("film", -1.0)]
    assert [(w.text, w.value) for w in browse.merge_words(toks, "unbelievable film")] == [
        ("unbelievable", 1.0), ("film", -1.0)]
