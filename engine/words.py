"""Token attributions -> word attributions, by character offsets.

Two models with different tokenizers (WordPiece vs BPE, cased vs uncased) are compared on
words of the review text, not on their tokens. A word is a run of word characters
(apostrophe contractions kept together: ``don't``) or a single punctuation character; its
value is the sum of the values of the tokens that overlap it most (SHAP values are
additive, so the word keeps the review's total). Special tokens ([CLS], [SEP], <s>) and
tokens with empty spans are dropped.

Without the review text, words are rebuilt from the tokens alone: tokens whose spans touch
(one ends where the next starts) form one word. With the text is preferred and is what
:mod:`engine.compare` uses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

WORD_RE = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


@dataclass(frozen=True)
class Feature:
    """One compared unit (a word or a token): its span, its text and its value."""

    start: int
    end: int
    text: str           # the feature's key for frequency tables: lower-cased word or the token string
    value: float
    n_tokens: int = 1

    @property
    def span(self) -> tuple[int, int]:
        return (self.start, self.end)


def token_features(tokens: Sequence[Mapping[str, Any]]) -> list[Feature]:
    """Non-special tokens as features, in position order (key: the token string).

    ``tokens``: dicts (as Store.explanation returns) or objects with the same attributes.
    """
    if tokens and not isinstance(tokens[0], Mapping):
        tokens = [{k: getattr(t, k) for k in ("position", "token", "start", "end", "value", "special")}
                  for t in tokens]
    out = []
    for t in sorted(tokens, key=lambda t: t["position"]):
        if t.get("special"):
            continue
        out.append(Feature(int(t["start"]), int(t["end"]), str(t["token"]), float(t["value"])))
    return out


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the words of ``text`` (see the module docstring)."""
    return [m.span() for m in WORD_RE.finditer(text)]


def explanation_words(tokens: Sequence[Mapping[str, Any]], text: str | None = None) -> list[Feature]:
    """Word features of one explanation: token values summed per word, words in text order.

    Words that no token covers (beyond a truncated input) are left out, so two models
    truncated at different places are compared only where both saw the text.
    """
    toks = [t for t in token_features(tokens) if t.end > t.start]
    if text is None:
        return _words_by_contiguity(toks)
    spans = word_spans(text)
    if not spans:
        return []
    starts = [s for s, _ in spans]
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    import bisect

    for t in toks:
        # candidate words: those overlapping [t.start, t.end)
        i = max(0, bisect.bisect_right(starts, t.start) - 1)
        best, best_overlap = None, 0
        while i < len(spans) and spans[i][0] < t.end:
            overlap = min(t.end, spans[i][1]) - max(t.start, spans[i][0])
            if overlap > best_overlap:
                best, best_overlap = i, overlap
            i += 1
        if best is None:
            continue
        sums[best] = sums.get(best, 0.0) + t.value
        counts[best] = counts.get(best, 0) + 1
    return [Feature(spans[i][0], spans[i][1], text[spans[i][0]:spans[i][1]].lower(), sums[i], counts[i])
            for i in sorted(sums)]


def _words_by_contiguity(toks: list[Feature]) -> list[Feature]:
    out: list[Feature] = []
    cur: list[Feature] = []
    for t in sorted(toks, key=lambda t: (t.start, t.end)):
        if cur and t.start > cur[-1].end:
            out.append(_merge(cur))
            cur = []
        cur.append(t)
    if cur:
        out.append(_merge(cur))
    return out


def _merge(parts: list[Feature]) -> Feature:
    text = "".join(p.text.removeprefix("##").removeprefix("Ġ").removeprefix("▁") for p in parts).lower()
    return Feature(parts[0].start, max(p.end for p in parts), text, sum(p.value for p in parts), len(parts))


def features(tokens: Sequence[Mapping[str, Any]], level: str = "word", text: str | None = None) -> list[Feature]:
    """The features of one explanation at ``level`` ("word" or "token")."""
    if level == "token":
        return token_features(tokens)
    if level == "word":
        return explanation_words(tokens, text)
    from engine.errors import BadInput

    raise BadInput(f"unknown comparison level {level!r}", "use 'word' or 'token'")
