"""Word view of stored explanations: subword values summed into words by character offsets,
on real explanations of the tiny model (punctuation, <br />-derived newlines, accents, emoji)."""

from __future__ import annotations

import re

import pytest

from engine.config import ExplainSpec

TEXTS = {
    "punct": "Unwatchable!!! The plot -- if you can call it that -- was (mostly) nonsense; don't bother.",
    "br": "Great cast.\n\nTerrible script.\nWatch it anyway?",
    "accents": "Amélie is a café-crème of a film: naïve, charmant, très réussi. Señor Müller approves.",
    "emoji": "Loved it 😀😀 best film ever 👍🏽 10/10 #mustwatch",
}


@pytest.fixture(scope="module")
def explained(tiny_model_dir, tmp_path_factory):
    from engine.explain import explain_review
    from engine.models import load_classifier
    from engine.store import open_store

    loaded = load_classifier(str(tiny_model_dir), name="tiny")
    store = open_store(tmp_path_factory.mktemp("w") / "x.db")
    reviews = [{"id": rid, "dataset": "t", "split": "test", "source_id": rid, "label": 1, "rating": None,
                "text": text, "n_chars": len(text), "encoding": "utf-8"} for rid, text in TEXTS.items()]
    store.put_sample("t", reviews, list(TEXTS))
    store.upsert_model(loaded.store_row())
    out = {rid: explain_review(store, loaded, rid, ExplainSpec(max_evals=40), max_length=128) for rid in TEXTS}
    store.close()
    return out


WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


@pytest.mark.parametrize("rid", list(TEXTS))
def test_token_offsets_point_into_the_text(explained, rid):
    text = TEXTS[rid]
    e = explained[rid]
    for t in e["tokens"]:
        if t["special"]:
            assert t["value"] == 0.0
            continue
        piece = text[t["start"]:t["end"]]
        assert piece and not piece.isspace()
        tok = t["token"].removeprefix("##")
        if tok != "[UNK]":  # the uncased tokenizer strips accents: compare without them
            import unicodedata

            plain = "".join(c for c in unicodedata.normalize("NFD", piece) if not unicodedata.combining(c))
            assert plain.lower() == tok


@pytest.mark.parametrize("rid", list(TEXTS))
def test_words_sum_their_subwords(explained, rid):
    from engine.explain import explanation_words

    text = TEXTS[rid]
    e = explained[rid]
    words = explanation_words(e, text)
    spans = [m.span() for m in WORD.finditer(text)]
    # expected: each real token goes to the word it overlaps most (first on ties): a token
    # lies inside one word, except [UNK] over an emoji sequence (👍🏽 is two characters)
    want: dict[tuple[int, int], float] = {}
    for t in e["tokens"]:
        if t["special"]:
            continue
        overlap = [min(t["end"], s[1]) - max(t["start"], s[0]) for s in spans]
        span = spans[overlap.index(max(overlap))]
        if t["token"] != "[UNK]":
            assert span[0] <= t["start"] and t["end"] <= span[1]
        want[span] = want.get(span, 0.0) + t["value"]
    got = {w.span: w.value for w in words}
    assert set(got) == set(want)
    for span, v in want.items():
        assert got[span] == pytest.approx(v, abs=1e-12)
    for w in words:
        assert w.text == text[w.start:w.end].lower()
    # word values keep the explanation's total: f(x) - base
    assert sum(got.values()) == pytest.approx(e["fx"] - e["base_value"], abs=1e-6)


def test_specific_words(explained):
    from engine.explain import explanation_words

    words = {w.text: w for w in explanation_words(explained["punct"], TEXTS["punct"])}
    assert words["unwatchable"].n_tokens == 3          # subwords merged
    assert words["don't"].n_tokens == 3                  # don ' t
    br = [w.text for w in explanation_words(explained["br"], TEXTS["br"])]
    assert br[:6] == ["great", "cast", ".", "terrible", "script", "."]   # newlines separate words
    acc = {w.text for w in explanation_words(explained["accents"], TEXTS["accents"])}
    assert {"amélie", "café", "crème", "naïve", "très", "señor", "müller"} <= acc
    emo = explanation_words(explained["emoji"], TEXTS["emoji"])
    assert "😀" in {w.text for w in emo}


def test_words_without_text_group_touching_tokens(explained):
    from engine.explain import explanation_words

    words = explanation_words(explained["punct"])
    assert "unwatchable!!!" in [w.text for w in words]
    total = sum(t["value"] for t in explained["punct"]["tokens"])
    assert sum(w.value for w in words) == pytest.approx(total, abs=1e-9)
