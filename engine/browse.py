"""Read queries for browsing a workspace (the TUI's data source; no Textual here).

Everything is read straight from SQLite and sized for large samples: a listing is an
ordered list of review ids (one indexed query per sort/filter change), and the rows
the screen shows are fetched by page. Nothing here loads every review's text.

The disagreement score of a review for a pair of models is |p_ref - p_other|, the gap
between their positive-class probabilities (1.0 = confident opposite answers); the
confidence gap is |conf_ref - conf_other| with conf = max(p, 1 - p).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from engine.store import Store

SORTS = ("disagreement", "confidence_gap", "length", "sample")
SORT_LABELS = {"disagreement": "disagreement", "confidence_gap": "confidence gap",
               "length": "length", "sample": "sample order"}
OUTCOMES = ("all", "flips", "both_correct", "any_wrong", "ref_wrong", "other_wrong")
OUTCOME_LABELS = {"all": "all", "flips": "flips (predictions differ)", "both_correct": "both correct",
                  "any_wrong": "incorrect (either model)", "ref_wrong": "reference wrong",
                  "other_wrong": "other model wrong"}
CLASS_NAMES = ("negative", "positive")
SNIPPET_CHARS = 160


@dataclass(frozen=True)
class ModelInfo:
    name: str
    model_id: str
    role: str                    # reference | compressed
    pred_hash: str | None        # settings hash of its newest predictions (None: none yet)


@dataclass(frozen=True)
class Context:
    """What an experiment holds: its models, sample sizes and explainer seeds."""

    experiment: str
    models: tuple[ModelInfo, ...]
    n_reviews: int
    n_explain: int
    explain_seed: int | None = None
    noise_seed: int | None = None
    dataset: str = ""

    def model(self, name: str) -> ModelInfo | None:
        return next((m for m in self.models if m.name == name), None)

    @property
    def reference(self) -> ModelInfo | None:
        return next((m for m in self.models if m.role == "reference"), self.models[0] if self.models else None)

    def default_pair(self) -> tuple[str, str] | None:
        ref = self.reference
        if ref is None:
            return None
        other = next((m for m in self.models if m.name != ref.name), ref)
        return ref.name, other.name


def experiments(store: Store) -> list[str]:
    return [r[0] for r in store.conn.execute("SELECT name FROM experiments ORDER BY updated_at DESC, name")]


def load_context(store: Store, experiment: str | None = None) -> Context | None:
    """The experiment's context (the latest experiment when none is named); None if empty."""
    names = experiments(store)
    if not names:
        return None
    if experiment not in names:
        experiment = names[0]
    row = store.conn.execute("SELECT preset, dataset FROM experiments WHERE name = ?", [experiment]).fetchone()
    try:
        explain = json.loads(row[0]).get("explain", {}) or {}
    except (TypeError, ValueError):
        explain = {}
    models = []
    for name, mid, role in store.conn.execute(
            "SELECT name, model_id, role FROM experiment_models WHERE experiment = ? ORDER BY ordinal", [experiment]):
        h = store.conn.execute("SELECT settings_hash FROM predictions WHERE model_id = ?"
                               " ORDER BY created_at DESC LIMIT 1", [mid]).fetchone()
        models.append(ModelInfo(name, mid, role, h[0] if h else None))
    counts = dict(store.conn.execute(
        "SELECT role, COUNT(*) FROM samples WHERE experiment = ? GROUP BY role", [experiment]).fetchall())
    return Context(experiment, tuple(models), int(counts.get("metrics", 0)), int(counts.get("explain", 0)),
                   explain.get("seed"), explain.get("noise_seed"), row[1] or "")


# -- listing ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReviewQuery:
    """A sorted, filtered view of an experiment's reviews for one pair of models."""

    ref: str                                  # model names
    other: str
    sort: str = "disagreement"                # one of SORTS
    descending: bool = True
    label: int | None = None                  # 0 negative, 1 positive, None both
    outcome: str = "all"                      # one of OUTCOMES
    search: str = ""                          # case-insensitive substring of the text
    explained_only: bool = False

    def with_(self, **kw: Any) -> "ReviewQuery":
        return replace(self, **kw)

    def describe(self) -> str:
        parts = [f"sorted by {SORT_LABELS.get(self.sort, self.sort)} {'↓' if self.descending else '↑'}"]
        if self.label is not None:
            parts.append(f"class {CLASS_NAMES[self.label]}")
        if self.outcome != "all":
            parts.append(OUTCOME_LABELS.get(self.outcome, self.outcome))
        if self.search:
            parts.append(f"text contains {self.search!r}")
        if self.explained_only:
            parts.append("explained only")
        return ", ".join(parts)


def _like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _pair(ctx: Context, q: ReviewQuery) -> tuple[ModelInfo, ModelInfo]:
    a, b = ctx.model(q.ref), ctx.model(q.other)
    if a is None or b is None:
        from engine.errors import BadInput

        raise BadInput(f"no model named {q.ref if a is None else q.other!r} in {ctx.experiment}",
                       f"use one of: {', '.join(m.name for m in ctx.models)}")
    return a, b


_ORDER = {
    "disagreement": "COALESCE(ABS(a.p_pos - b.p_pos), -1)",
    "confidence_gap": "COALESCE(ABS(ABS(a.p_pos - 0.5) - ABS(b.p_pos - 0.5)) * 2, -1)",
    "length": "r.n_chars",
    "sample": "s.ordinal",
}


def ordered_ids(store: Store, ctx: Context, q: ReviewQuery) -> list[str]:
    """The ids of the reviews matching ``q``, in its order (one query; ties in sample order)."""
    a, b = _pair(ctx, q)
    sql = ["SELECT s.review_id FROM samples s JOIN reviews r ON r.id = s.review_id",
           "LEFT JOIN predictions a ON a.model_id = ? AND a.review_id = s.review_id AND a.settings_hash = ?",
           "LEFT JOIN predictions b ON b.model_id = ? AND b.review_id = s.review_id AND b.settings_hash = ?",
           "WHERE s.experiment = ? AND s.role = 'metrics'"]
    args: list[Any] = [a.model_id, a.pred_hash or "", b.model_id, b.pred_hash or "", ctx.experiment]
    if q.label is not None:
        sql.append("AND r.label = ?")
        args.append(int(q.label))
    if q.outcome == "flips":
        sql.append("AND a.pred IS NOT NULL AND b.pred IS NOT NULL AND a.pred != b.pred")
    elif q.outcome == "both_correct":
        sql.append("AND a.pred = r.label AND b.pred = r.label")
    elif q.outcome == "any_wrong":
        sql.append("AND (a.pred != r.label OR b.pred != r.label)")
    elif q.outcome == "ref_wrong":
        sql.append("AND a.pred != r.label")
    elif q.outcome == "other_wrong":
        sql.append("AND b.pred != r.label")
    if q.search:
        sql.append("AND r.text LIKE ? ESCAPE '\\'")
        args.append(f"%{_like_escape(q.search)}%")
    if q.explained_only:
        sql.append("AND EXISTS (SELECT 1 FROM explanations e WHERE e.review_id = s.review_id"
                   " AND e.model_id IN (?, ?))")
        args += [a.model_id, b.model_id]
    direction = "DESC" if q.descending else "ASC"
    sql.append(f"ORDER BY {_ORDER.get(q.sort, _ORDER['sample'])} {direction}, s.ordinal")
    return [r[0] for r in store.conn.execute(" ".join(sql), args)]


def count(store: Store, ctx: Context, q: ReviewQuery) -> int:
    return len(ordered_ids(store, ctx, q))


@dataclass(frozen=True)
class ModelPred:
    pred: int
    p_pos: float
    truncated: bool

    @property
    def confidence(self) -> float:
        return self.p_pos if self.pred == 1 else 1.0 - self.p_pos


@dataclass(frozen=True)
class ReviewRow:
    id: str
    ordinal: int
    label: int
    n_chars: int
    snippet: str                                  # the text's start, one line (data, not markup)
    preds: dict[str, ModelPred]                   # model name -> prediction (missing: not predicted yet)
    explained: tuple[str, ...]                    # names of models with an explanation
    ref: str
    other: str

    @property
    def ref_pred(self) -> ModelPred | None:
        return self.preds.get(self.ref)

    @property
    def other_pred(self) -> ModelPred | None:
        return self.preds.get(self.other)

    @property
    def flip(self) -> bool:
        a, b = self.ref_pred, self.other_pred
        return bool(a and b and a.pred != b.pred)

    @property
    def disagreement(self) -> float | None:
        a, b = self.ref_pred, self.other_pred
        return abs(a.p_pos - b.p_pos) if a and b else None

    @property
    def confidence_gap(self) -> float | None:
        a, b = self.ref_pred, self.other_pred
        return abs(a.confidence - b.confidence) if a and b else None


def _chunks(seq: Sequence[str], n: int = 500):
    for i in range(0, len(seq), n):
        yield list(seq[i:i + n])


def rows(store: Store, ctx: Context, q: ReviewQuery, ids: Sequence[str]) -> list[ReviewRow]:
    """The rows of ``ids`` (in that order): label, length, snippet, every model's prediction."""
    ids = list(ids)
    if not ids:
        return []
    base: dict[str, tuple] = {}
    preds: dict[str, dict[str, ModelPred]] = {i: {} for i in ids}
    explained: dict[str, list[str]] = {i: [] for i in ids}
    by_id = {m.model_id: m.name for m in ctx.models}
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        for rid, label, n_chars, snip, ordinal in store.conn.execute(
                f"SELECT r.id, r.label, r.n_chars, substr(r.text, 1, {SNIPPET_CHARS}), s.ordinal"
                f" FROM reviews r JOIN samples s ON s.review_id = r.id AND s.experiment = ? AND s.role = 'metrics'"
                f" WHERE r.id IN ({marks})", [ctx.experiment, *chunk]):
            base[rid] = (label, n_chars, " ".join(snip.split()), ordinal)
        for m in ctx.models:
            if not m.pred_hash:
                continue
            for rid, pred, p_pos, trunc in store.conn.execute(
                    f"SELECT review_id, pred, p_pos, truncated FROM predictions WHERE model_id = ?"
                    f" AND settings_hash = ? AND review_id IN ({marks})", [m.model_id, m.pred_hash, *chunk]):
                preds[rid][m.name] = ModelPred(int(pred), float(p_pos), bool(trunc))
        for rid, mid in store.conn.execute(
                f"SELECT DISTINCT review_id, model_id FROM explanations WHERE review_id IN ({marks})", chunk):
            if mid in by_id:
                explained[rid].append(by_id[mid])
    out = []
    for rid in ids:
        if rid not in base:
            continue
        label, n_chars, snip, ordinal = base[rid]
        out.append(ReviewRow(rid, ordinal, int(label), int(n_chars), snip, preds[rid],
                             tuple(explained[rid]), q.ref, q.other))
    return out


def page(store: Store, ctx: Context, q: ReviewQuery, offset: int, limit: int) -> list[ReviewRow]:
    """One page of the listing (LIMIT/OFFSET over the ordered ids)."""
    ids = ordered_ids(store, ctx, q)
    return rows(store, ctx, q, ids[offset:offset + limit])


# -- one review in detail ------------------------------------------------------------------

@dataclass(frozen=True)
class Token:
    text: str            # as the tokenizer wrote it (display uses the review's characters)
    start: int
    end: int
    value: float
    special: bool


@dataclass(frozen=True)
class ExplanationView:
    model: str
    explanation_id: int
    settings_hash: str
    settings: dict
    output: str
    base_value: float
    fx: float
    additivity_error: float
    truncated: bool
    n_tokens: int
    warning: str | None
    created_at: str
    tokens: tuple[Token, ...]

    def words(self, text: str) -> tuple[Token, ...]:
        """Word-level tokens: sub-word pieces that touch (no character between) are merged and
        their values summed. Special tokens are dropped."""
        return merge_words(self.tokens, text)

    def level(self, level: str, text: str) -> tuple[Token, ...]:
        if level == "word":
            return self.words(text)
        return tuple(t for t in self.tokens if not t.special)

    @property
    def covered_chars(self) -> int:
        """How far into the text the explained tokens reach (truncation point)."""
        return max((t.end for t in self.tokens if not t.special), default=0)

    def to_engine_dict(self) -> dict[str, Any]:
        """The shape ``Store.explanation`` returns (for engine.compare functions)."""
        return {"id": self.explanation_id, "settings_hash": self.settings_hash, "settings": self.settings,
                "output": self.output, "base_value": self.base_value, "fx": self.fx,
                "additivity_error": self.additivity_error, "truncated": int(self.truncated),
                "n_tokens": self.n_tokens, "warning": self.warning, "created_at": self.created_at,
                "tokens": [{"position": i, "token": t.text, "start": t.start, "end": t.end, "value": t.value,
                            "special": int(t.special)} for i, t in enumerate(self.tokens)]}


def merge_words(tokens: Sequence[Token], text: str) -> tuple[Token, ...]:
    """Word-level units, the same words engine.compare compares (engine.words): token values
    summed per word of the text; words no token covers (past truncation) are left out."""
    try:
        from engine.words import explanation_words
    except ImportError:  # pragma: no cover - words module absent: merge touching tokens
        return _merge_touching(tokens, text)
    rows = [{"position": i, "token": t.text, "start": t.start, "end": t.end, "value": t.value,
             "special": int(t.special)} for i, t in enumerate(tokens)]
    return tuple(Token(text[f.start:f.end], f.start, f.end, f.value, False) for f in explanation_words(rows, text))


def _merge_touching(tokens: Sequence[Token], text: str) -> tuple[Token, ...]:
    out: list[Token] = []
    for t in tokens:
        if t.special or t.end <= t.start:
            continue
        if out and t.start == out[-1].end and not text[t.start:t.start + 1].isspace():
            prev = out[-1]
            out[-1] = Token(text[prev.start:t.end], prev.start, t.end, prev.value + t.value, False)
        else:
            out.append(Token(text[t.start:t.end], t.start, t.end, t.value, False))
    return tuple(out)


@dataclass(frozen=True)
class ReviewDetail:
    id: str
    label: int
    text: str
    preds: dict[str, ModelPred]
    explanations: dict[str, ExplanationView] = field(default_factory=dict)   # model name -> view

    def max_abs(self, names: Sequence[str], level: str = "token") -> float:
        """The shared colour scale's bound over these models' explanations."""
        vals = [abs(t.value) for n in names if n in self.explanations
                for t in self.explanations[n].level(level, self.text)]
        return max(vals, default=0.0)


def _pick_explanation(store: Store, ctx: Context, model_id: str, review_id: str) -> tuple | None:
    cands = store.conn.execute(
        "SELECT id, settings_hash, settings, output, base_value, fx, additivity_error, truncated, n_tokens,"
        " warning, created_at FROM explanations WHERE model_id = ? AND review_id = ?"
        " ORDER BY created_at DESC, id DESC", [model_id, review_id]).fetchall()
    if not cands:
        return None

    def seed(row: tuple) -> Any:
        try:
            return json.loads(row[2]).get("seed")
        except (TypeError, ValueError):
            return None
    if ctx.explain_seed is not None:
        main = [c for c in cands if seed(c) == ctx.explain_seed]
        if main:
            return main[0]
    if ctx.noise_seed is not None:   # prefer anything that is not the noise-floor re-run
        main = [c for c in cands if seed(c) != ctx.noise_seed]
        if main:
            return main[0]
    return cands[0]


def explanation_view(store: Store, ctx: Context, model: str, review_id: str) -> ExplanationView | None:
    """The model's main explanation of the review (not the noise-floor re-run), newest first."""
    m = ctx.model(model)
    if m is None:
        return None
    with store.snapshot():  # the row and its tokens from one state: a run may replace it meanwhile
        row = _pick_explanation(store, ctx, m.model_id, review_id)
        if row is None:
            return None
        toks = tuple(Token(t, int(s), int(e), float(v), bool(sp)) for t, s, e, v, sp in store.conn.execute(
            "SELECT token, start, end, value, special FROM attributions WHERE explanation_id = ? ORDER BY position",
            [row[0]]))
    try:
        settings = json.loads(row[2])
    except (TypeError, ValueError):
        settings = {}
    return ExplanationView(model, int(row[0]), row[1], settings, row[3], float(row[4]), float(row[5]),
                           float(row[6]), bool(row[7]), int(row[8]), row[9], row[10], toks)


def review_detail(store: Store, ctx: Context, review_id: str, models: Sequence[str]) -> ReviewDetail | None:
    """A review's full text, every model's prediction, and the named models' explanations."""
    r = store.conn.execute("SELECT id, label, text FROM reviews WHERE id = ?", [review_id]).fetchone()
    if r is None:
        return None
    preds: dict[str, ModelPred] = {}
    for m in ctx.models:
        if not m.pred_hash:
            continue
        p = store.conn.execute("SELECT pred, p_pos, truncated FROM predictions WHERE model_id = ? AND"
                               " review_id = ? AND settings_hash = ?", [m.model_id, review_id, m.pred_hash]).fetchone()
        if p:
            preds[m.name] = ModelPred(int(p[0]), float(p[1]), bool(p[2]))
    expl = {}
    for name in dict.fromkeys(models):
        v = explanation_view(store, ctx, name, review_id)
        if v is not None:
            expl[name] = v
    return ReviewDetail(r[0], int(r[1]), r[2], preds, expl)


def top_tokens(tokens: Sequence[Token], k: int = 5) -> tuple[list[Token], list[Token]]:
    """The k most positive and the k most negative tokens (by value)."""
    pos = sorted((t for t in tokens if t.value > 0), key=lambda t: -t.value)[:k]
    neg = sorted((t for t in tokens if t.value < 0), key=lambda t: t.value)[:k]
    return pos, neg


Level = Literal["token", "word"]
