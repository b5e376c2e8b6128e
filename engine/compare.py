"""Comparison statistics between two models' SHAP attributions (plain data out, no drawing).

For a pair (reference A, other B) over the reviews both explained with the experiment's
main explainer settings:

* study figures as data: top features by mean |SHAP| per model, the distribution of all
  values per model, the top features by difference of mean attribution (B - A), with
  bootstrap confidence intervals over reviews (reviews are the resampled unit);
* magnitude: per review mean |SHAP| of each model, raw and divided by that model's
  |f(x) - base|; paired Wilcoxon signed-rank test and matched-pairs rank-biserial effect;
* agreement per review (:func:`review_agreement`): Spearman and Kendall of the signed
  values, top-k Jaccard, sign agreement on the reference's top-k, and Krishna et al.'s
  feature / rank / sign / signed-rank agreement at k; aggregated, and split by true
  class, by correctness and by prediction flips; word level and token level;
* the noise floor: the reference against its own re-explanation with another seed
  (``preset.explain.noise_seed``), next to reference vs other; a difference is flagged
  real only when it exceeds that floor;
* faithfulness per model (:mod:`engine.faithfulness`) when stored;
* triage (:func:`triage`): reviews ranked by prediction flip and disagreement.

Every result is a dataclass with ``to_dict()`` that is JSON-safe (no NaN: undefined
values are ``None``). This module does not import torch.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Literal

import numpy as np

from engine.errors import BadInput
from engine.store import Store
from engine.words import Feature, features

Level = Literal["word", "token"]
LEVELS: tuple[str, ...] = ("word", "token")
KS: tuple[int, ...] = (5, 10)
# Agreement metrics, in display order; every one is "higher = more agreement", in [-1, 1] or [0, 1].
METRICS: tuple[str, ...] = (
    "spearman", "kendall", "jaccard5", "jaccard10", "sign5", "sign10",
    "feature5", "feature10", "rank5", "rank10", "ksign5", "ksign10", "signed_rank5", "signed_rank10",
)
METRIC_LABELS: dict[str, str] = {
    "spearman": "Spearman rho", "kendall": "Kendall tau",
    "jaccard5": "top-5 Jaccard", "jaccard10": "top-10 Jaccard",
    "sign5": "sign agreement, ref top-5", "sign10": "sign agreement, ref top-10",
    "feature5": "feature agreement@5", "feature10": "feature agreement@10",
    "rank5": "rank agreement@5", "rank10": "rank agreement@10",
    "ksign5": "sign agreement@5 (Krishna)", "ksign10": "sign agreement@10 (Krishna)",
    "signed_rank5": "signed-rank agreement@5", "signed_rank10": "signed-rank agreement@10",
}
ZERO = 1e-12
ALPHA = 0.05


# -- JSON safety -------------------------------------------------------------------------

def json_safe(obj: Any) -> Any:
    """Plain JSON types: dataclasses to dicts, numpy to Python, NaN/inf to None."""
    if is_dataclass(obj) and not isinstance(obj, type):
        if hasattr(obj, "to_dict"):
            return obj.to_dict()
        return json_safe(asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def _f(x: Any) -> float | None:
    """A finite float or None."""
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class _Dict:
    def to_dict(self) -> dict[str, Any]:
        return json_safe({f.name: getattr(self, f.name) for f in fields(self)})  # type: ignore[arg-type]


# -- bootstrap -----------------------------------------------------------------------------

def _boot_weights(n: int, n_boot: int, seed: int, chunk: int | None = None):
    """Yield (m, n) resampling counts, m <= chunk rows at a time (n_boot rows in all): row b
    says how often each review is in resample b. The same seed gives the same resamples."""
    rng = np.random.Generator(np.random.PCG64(seed))
    chunk = chunk or max(1, 2_000_000 // max(1, n))
    for b in range(0, n_boot, chunk):
        m = min(chunk, n_boot - b)
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=m).astype(float)


def bootstrap_mean_ci(values: Sequence[float] | np.ndarray, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean (None, None) when fewer than 2 values."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n < 2 or n_boot < 1:
        return None, None
    rng = np.random.Generator(np.random.PCG64(seed))
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // n)
    for b in range(0, n_boot, chunk):
        m = min(chunk, n_boot - b)
        means[b:b + m] = x[rng.integers(0, n, (m, n))].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return _f(lo), _f(hi)


def bootstrap_ratio_ci(num: np.ndarray, den: np.ndarray, n_boot: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile intervals of sum(num)/sum(den) per column, resampling rows (reviews).

    ``num``, ``den``: (n_reviews, n_features). Returns (low, high) arrays (NaN where undefined).
    """
    n, k = num.shape
    if n < 2 or n_boot < 1 or k == 0:
        return np.full(k, np.nan), np.full(k, np.nan)
    est = np.empty((n_boot, k))
    b = 0
    for wb in _boot_weights(n, n_boot, seed):
        with np.errstate(invalid="ignore", divide="ignore"):
            est[b:b + len(wb)] = (wb @ num) / (wb @ den)
        b += len(wb)
    a = (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo = np.nanquantile(est, a, axis=0)
        hi = np.nanquantile(est, 1 - a, axis=0)
    return lo, hi


# -- per-review agreement --------------------------------------------------------------------

@dataclass(frozen=True)
class AgreementRow(_Dict):
    """Agreement of two explanations of one review (reference a, other b).

    ``n_features``: features both explanations cover (words or tokens, specials excluded).
    Every metric is None when undefined (fewer than 2 features, constant or all-zero values).
    """

    review_id: str
    level: str
    n_features: int
    spearman: float | None = None
    kendall: float | None = None
    jaccard5: float | None = None
    jaccard10: float | None = None
    sign5: float | None = None
    sign10: float | None = None
    feature5: float | None = None
    feature10: float | None = None
    rank5: float | None = None
    rank10: float | None = None
    ksign5: float | None = None
    ksign10: float | None = None
    signed_rank5: float | None = None
    signed_rank10: float | None = None
    note: str = ""

    def metric(self, name: str) -> float | None:
        return getattr(self, name)


def _rank_corr(a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None]:
    if len(a) < 2 or np.ptp(a) <= ZERO or np.ptp(b) <= ZERO:
        return None, None
    from scipy import stats

    ra, rb = stats.rankdata(a), stats.rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    rho = float((ra * rb).sum() / den) if den > 0 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau = _f(stats.kendalltau(a, b).statistic)
    return (None if rho is None else max(-1.0, min(1.0, rho))), tau


def _topk(v: np.ndarray, k: int) -> list[int]:
    """Indices of the k largest |v| (ties: earlier position first)."""
    return list(np.argsort(-np.abs(v), kind="stable")[:k])


def agreement_metrics(a: Sequence[float], b: Sequence[float], ks: Sequence[int] = KS) -> dict[str, float | None]:
    """All agreement metrics of two aligned attribution vectors (same features, same order)."""
    av, bv = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if av.shape != bv.shape:
        raise BadInput(f"attribution vectors differ in length ({len(av)} vs {len(bv)})",
                       "align them on the same features first")
    out: dict[str, float | None] = {m: None for m in METRICS}
    n = len(av)
    if n == 0 or np.max(np.abs(av)) <= ZERO or np.max(np.abs(bv)) <= ZERO:
        return out
    out["spearman"], out["kendall"] = _rank_corr(av, bv)
    sa, sb = np.sign(av), np.sign(bv)
    for k in ks:
        ke = min(k, n)
        ta, tb = _topk(av, ke), _topk(bv, ke)
        both = set(ta) & set(tb)
        out[f"jaccard{k}"] = len(both) / len(set(ta) | set(tb))
        out[f"sign{k}"] = sum(1 for i in ta if sa[i] == sb[i]) / ke
        out[f"feature{k}"] = len(both) / ke
        out[f"rank{k}"] = sum(1 for i, j in zip(ta, tb) if i == j) / ke
        out[f"ksign{k}"] = sum(1 for i in both if sa[i] == sb[i]) / ke
        out[f"signed_rank{k}"] = sum(1 for i, j in zip(ta, tb) if i == j and sa[i] == sb[i]) / ke
    return out


def _by_span(feats: Sequence[Feature]) -> dict[tuple[int, int], Feature]:
    out: dict[tuple[int, int], Feature] = {}
    for f in feats:
        if f.span in out:  # byte-level tokenizers can give several tokens one span: sum them
            g = out[f.span]
            out[f.span] = Feature(g.start, g.end, g.text, g.value + f.value, g.n_tokens + f.n_tokens)
        else:
            out[f.span] = f
    return out


def align(feats_a: Sequence[Feature], feats_b: Sequence[Feature]) -> tuple[list[Feature], np.ndarray, np.ndarray]:
    """Features both cover (matched by character span), in text order, and the two value vectors."""
    da, db = _by_span(feats_a), _by_span(feats_b)
    spans = sorted(set(da) & set(db))
    return ([da[s] for s in spans], np.array([da[s].value for s in spans], dtype=float),
            np.array([db[s].value for s in spans], dtype=float))


def _tokens_of(expl: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    toks = expl.get("tokens")
    if toks is None:
        raise BadInput("an explanation without tokens was given", "pass rows from Store.explanation()")
    return toks


def review_agreement(expl_a: Mapping[str, Any], expl_b: Mapping[str, Any], level: Level = "word", *,
                     text: str | None = None, review_id: str | None = None) -> AgreementRow:
    """Agreement of two explanations of the same review (rows as Store.explanation returns).

    ``level`` "word" sums token values per word of ``text`` (without text: per run of
    touching tokens); "token" compares tokens with identical character spans. Special
    tokens are excluded. A is the reference: ``sign5``/``sign10`` ask whether B gives A's
    top features the same sign.
    """
    if level not in LEVELS:
        raise BadInput(f"unknown comparison level {level!r}", "use 'word' or 'token'")
    rid = review_id or str(expl_a.get("review_id", ""))
    fa = features(_tokens_of(expl_a), level, text)
    fb = features(_tokens_of(expl_b), level, text)
    return features_agreement(fa, fb, level, rid)


def features_agreement(fa: Sequence[Feature], fb: Sequence[Feature], level: str = "word",
                       review_id: str = "") -> AgreementRow:
    """:func:`review_agreement` on features already extracted (engine.words)."""
    _, a, b = align(fa, fb)
    note = ""
    if len(a) == 0:
        note = "no common features"
    elif np.max(np.abs(a)) <= ZERO or np.max(np.abs(b)) <= ZERO:
        note = "all-zero attributions"
    elif len(a) < 2:
        note = "fewer than 2 common features"
    return AgreementRow(review_id, level, len(a), **agreement_metrics(a, b), note=note)


# -- summaries -----------------------------------------------------------------------------

@dataclass(frozen=True)
class MetricSummary(_Dict):
    """Mean (with a bootstrap CI over reviews) and distribution of one per-review metric."""

    n: int
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    median: float | None
    sd: float | None
    q25: float | None
    q75: float | None
    minimum: float | None
    maximum: float | None


def summarize(values: Sequence[float | None], n_boot: int = 1000, seed: int = 0) -> MetricSummary:
    x = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return MetricSummary(0, None, None, None, None, None, None, None, None, None)
    lo, hi = bootstrap_mean_ci(x, n_boot, seed)
    q25, med, q75 = np.quantile(x, [0.25, 0.5, 0.75])
    return MetricSummary(len(x), _f(x.mean()), lo, hi, _f(med), _f(x.std(ddof=1)) if len(x) > 1 else None,
                         _f(q25), _f(q75), _f(x.min()), _f(x.max()))


@dataclass(frozen=True)
class FloorComparison(_Dict):
    """Reference-vs-other agreement against the reference-vs-itself floor, paired by review.

    ``gap`` = floor mean - pair mean over reviews with both; ``real`` is True when the 95%
    bootstrap interval of the gap lies above 0 (the other model agrees with the reference
    less than the reference agrees with itself), False when it does not, None when
    there are too few reviews to tell.
    """

    metric: str
    n: int
    pair_mean: float | None
    floor_mean: float | None
    gap: float | None
    gap_ci_low: float | None
    gap_ci_high: float | None
    p_value: float | None      # Wilcoxon signed-rank, one-sided: floor > pair
    real: bool | None



def reference_name(models: Sequence[Mapping[str, Any]], experiment: str) -> str:
    """The name of the experiment's reference model (a clear error when none is stored)."""
    refs = [m["name"] for m in models if m["role"] == "reference"]
    if not refs:
        raise BadInput(f"experiment {experiment!r} has no stored reference model", "run `shapdiff run` first")
    return refs[0]

def _wilcoxon(x: np.ndarray, y: np.ndarray, alternative: str = "two-sided") -> tuple[float | None, float | None]:
    """(statistic, p) of the paired Wilcoxon signed-rank test of x - y; None when undefined."""
    d = x - y
    if len(d) < 2 or not np.any(np.abs(d) > ZERO):
        return None, None
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # Exact distribution only for small samples without ties or zero differences;
            # scipy's "auto" otherwise falls back to a permutation test (~1 s a call).
            nz = d[np.abs(d) > ZERO]
            exact = len(nz) == len(d) and len(d) <= 50 and len(np.unique(np.abs(nz))) == len(nz)
            r = stats.wilcoxon(x, y, alternative=alternative, method="exact" if exact else "asymptotic")
        except ValueError:
            return None, None
    return _f(r.statistic), _f(r.pvalue)


def rank_biserial(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Matched-pairs rank-biserial correlation of x - y (zero differences dropped), in [-1, 1]:
    +1 when every x exceeds its y."""
    from scipy import stats

    d = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    d = d[np.abs(d) > ZERO]
    if len(d) == 0:
        return None
    r = stats.rankdata(np.abs(d))
    return _f((r[d > 0].sum() - r[d < 0].sum()) / r.sum())


def floor_comparison(metric: str, pair: Mapping[str, float | None], floor: Mapping[str, float | None],
                     n_boot: int = 1000, seed: int = 0) -> FloorComparison:
    """Compare per-review values (review id -> value) of a pair against its noise floor."""
    ids = [r for r in pair if pair[r] is not None and floor.get(r) is not None]
    p = np.array([pair[r] for r in ids], dtype=float)
    f = np.array([floor[r] for r in ids], dtype=float)
    if len(ids) == 0:
        return FloorComparison(metric, 0, None, None, None, None, None, None, None)
    gap = f - p
    lo, hi = bootstrap_mean_ci(gap, n_boot, seed)
    _, pv = _wilcoxon(f, p, "greater")
    real = None if lo is None else bool(lo > 0)
    if real is None and len(ids) >= 2 and not np.any(np.abs(gap) > ZERO):
        real = False
    return FloorComparison(metric, len(ids), _f(p.mean()), _f(f.mean()), _f(gap.mean()), lo, hi, pv, real)


@dataclass
class AgreementReport(_Dict):
    """Agreement at one level: per-review rows, the summary per metric, splits and the floor.

    ``splits``: split name ("class", "flip", "reference_correct", "other_correct") ->
    group -> {"n": reviews, metric: mean}. ``noise_rows``/``noise`` are the reference
    against its own noise-seed re-explanation (empty/None when not stored); ``floor``
    compares the pair with it metric by metric.
    """

    level: str
    rows: list[AgreementRow]
    summary: dict[str, MetricSummary]
    splits: dict[str, dict[str, dict[str, float | None]]]
    noise_rows: list[AgreementRow] = field(default_factory=list)
    noise: dict[str, MetricSummary] | None = None
    floor: dict[str, FloorComparison] = field(default_factory=dict)

    def mean(self, metric: str) -> float | None:
        return self.summary[metric].mean

    def noise_mean(self, metric: str) -> float | None:
        return self.noise[metric].mean if self.noise else None


# -- magnitude -------------------------------------------------------------------------------

@dataclass(frozen=True)
class MagnitudeRow(_Dict):
    """Per-review mean |SHAP| of each model, raw and divided by that model's |f(x) - base|."""

    review_id: str
    ref_raw: float | None
    other_raw: float | None
    ref_norm: float | None
    other_norm: float | None
    ref_gap: float | None       # |f(x) - base value|
    other_gap: float | None
    noise_raw: float | None = None    # the reference's noise-seed re-explanation
    noise_norm: float | None = None


@dataclass(frozen=True)
class MagnitudeTest(_Dict):
    """Paired comparison of a per-review magnitude (other vs reference).

    ``statistic``/``p_value``: two-sided Wilcoxon signed-rank test; ``effect_size``:
    matched-pairs rank-biserial correlation, positive when the other model's values are
    larger. ``exceeds_floor``: the per-review |other - reference| is larger than the
    reference's seed-to-seed |noise - reference| (one-sided Wilcoxon, p < alpha);
    ``real``: significant and beyond the floor (None when the floor is missing).
    """

    measure: str               # "raw" | "normalised"
    n: int
    mean_ref: float | None
    mean_other: float | None
    mean_diff: float | None    # other - reference
    diff_ci_low: float | None
    diff_ci_high: float | None
    median_ratio: float | None  # median over reviews of other / reference
    statistic: float | None
    p_value: float | None
    effect_size: float | None
    larger: str | None         # "other" | "reference" | None (not significant)
    floor_n: int = 0
    floor_mean_abs_diff: float | None = None   # mean |noise - reference|
    floor_p_value: float | None = None
    exceeds_floor: bool | None = None
    real: bool | None = None


def magnitude_test(measure: str, rows: Sequence[MagnitudeRow], n_boot: int = 1000, seed: int = 0,
                   alpha: float = ALPHA) -> MagnitudeTest:
    ra, oa, na = (f"ref_{'raw' if measure == 'raw' else 'norm'}", f"other_{'raw' if measure == 'raw' else 'norm'}",
                  f"noise_{'raw' if measure == 'raw' else 'norm'}")
    ok = [r for r in rows if getattr(r, ra) is not None and getattr(r, oa) is not None]
    x = np.array([getattr(r, oa) for r in ok], dtype=float)
    y = np.array([getattr(r, ra) for r in ok], dtype=float)
    if len(ok) == 0:
        return MagnitudeTest(measure, 0, None, None, None, None, None, None, None, None, None, None)
    d = x - y
    lo, hi = bootstrap_mean_ci(d, n_boot, seed)
    ratio = [a / b for a, b in zip(x, y) if b > ZERO]
    stat, p = _wilcoxon(x, y)
    eff = rank_biserial(x, y)
    larger = None
    if p is not None and p < alpha and eff is not None and eff != 0:
        larger = "other" if eff > 0 else "reference"
    fl = [r for r in ok if getattr(r, na) is not None]
    floor_n, floor_mean, floor_p, exceeds, real = len(fl), None, None, None, None
    if fl:
        dd = np.array([abs(getattr(r, oa) - getattr(r, ra)) for r in fl])
        nn = np.array([abs(getattr(r, na) - getattr(r, ra)) for r in fl])
        floor_mean = _f(nn.mean())
        _, floor_p = _wilcoxon(dd, nn, "greater")
        if floor_p is not None:
            exceeds = bool(floor_p < alpha)
        elif len(fl) >= 2:
            exceeds = bool(dd.mean() > nn.mean()) if not np.any(np.abs(dd - nn) > ZERO) else None
        if exceeds is not None:
            real = bool(exceeds and larger is not None)
    return MagnitudeTest(measure, len(ok), _f(y.mean()), _f(x.mean()), _f(d.mean()), lo, hi,
                         _f(np.median(ratio)) if ratio else None, stat, p, eff, larger,
                         floor_n, floor_mean, floor_p, exceeds, real)


@dataclass
class MagnitudeReport(_Dict):
    rows: list[MagnitudeRow]
    raw: MagnitudeTest
    normalised: MagnitudeTest


def _mean_abs(feats: Sequence[Feature]) -> float | None:
    return _f(np.mean([abs(f.value) for f in feats])) if feats else None


# -- study figures as data -------------------------------------------------------------------

@dataclass(frozen=True)
class FeatureStat(_Dict):
    """A feature (lower-cased word, or token) of one model: occurrences and mean attribution."""

    feature: str
    count: int          # occurrences over the reviews
    n_reviews: int      # reviews it occurs in
    mean_abs: float | None
    ci_low: float | None    # bootstrap CI of mean_abs over reviews
    ci_high: float | None
    mean: float | None      # signed mean


@dataclass(frozen=True)
class FeatureDiff(_Dict):
    """Difference of a feature's mean attribution, other - reference (paired bootstrap CI)."""

    feature: str
    count: int
    mean_ref: float | None
    mean_other: float | None
    diff: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass
class Distribution(_Dict):
    """All attribution values of one model (``values`` kept for plots, not in to_dict)."""

    model: str
    n: int
    mean: float | None
    sd: float | None
    mean_abs: float | None
    quantiles: dict[str, float | None]
    hist_edges: list[float]
    hist_counts: list[int]
    values: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "values"}
        return json_safe(d)


def _totals(per_review: Sequence[Sequence[Feature]]) -> dict[str, list[float]]:
    """feature -> [sum |v|, sum v, occurrences, reviews containing it] (dicts: no dense matrix)."""
    tot: dict[str, list[float]] = {}
    for feats in per_review:
        seen = set()
        for f in feats:
            t = tot.get(f.text)
            if t is None:
                t = tot[f.text] = [0.0, 0.0, 0, 0]
            t[0] += abs(f.value)
            t[1] += f.value
            t[2] += 1
            if f.text not in seen:
                seen.add(f.text)
                t[3] += 1
    return tot


def _matrix(per_review: Sequence[Sequence[Feature]], keys: Sequence[str], absolute: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per review x selected feature: sum of (|v| or v) and occurrences."""
    col = {k: j for j, k in enumerate(keys)}
    num, cnt = np.zeros((len(per_review), len(keys))), np.zeros((len(per_review), len(keys)))
    for i, feats in enumerate(per_review):
        for f in feats:
            j = col.get(f.text)
            if j is not None:
                num[i, j] += abs(f.value) if absolute else f.value
                cnt[i, j] += 1
    return num, cnt


def top_features(per_review: Sequence[Sequence[Feature]], *, min_freq: int = 5, top_n: int = 20,
                 n_boot: int = 1000, seed: int = 0) -> list[FeatureStat]:
    """Features by mean |attribution| over their occurrences (at least ``min_freq``)."""
    tot = _totals(per_review)
    keep = [(k, t) for k, t in tot.items() if t[2] >= max(1, min_freq)]
    if not keep:
        return []
    keep.sort(key=lambda kt: -kt[1][0] / kt[1][2])  # stable: first occurrence wins ties
    keep = keep[:top_n]
    keys = [k for k, _ in keep]
    num, cnt = _matrix(per_review, keys, True)
    lo, hi = bootstrap_ratio_ci(num, cnt, n_boot, seed)
    return [FeatureStat(k, int(t[2]), int(t[3]), _f(t[0] / t[2]), _f(lo[i]), _f(hi[i]), _f(t[1] / t[2]))
            for i, (k, t) in enumerate(keep)]


def feature_differences(ref: Sequence[Sequence[Feature]], other: Sequence[Sequence[Feature]], *,
                        min_freq: int = 5, top_n: int = 20, n_boot: int = 1000, seed: int = 0) -> list[FeatureDiff]:
    """Features by |mean attribution of other - of reference| (reviews paired, same order)."""
    if len(ref) != len(other):
        raise BadInput("the two models' review lists differ in length", "pass the same reviews in the same order")
    ta, tb = _totals(ref), _totals(other)
    mf = max(1, min_freq)
    common = [k for k in ta if k in tb and ta[k][2] >= mf and tb[k][2] >= mf]
    if not common:
        return []
    ma = np.array([ta[k][1] / ta[k][2] for k in common])
    mb = np.array([tb[k][1] / tb[k][2] for k in common])
    diff = mb - ma
    order = np.argsort(-np.abs(diff), kind="stable")[:top_n]
    keys = [common[j] for j in order]
    n = len(ref)
    lo = hi = np.full(len(order), np.nan)
    if n >= 2 and n_boot >= 1:
        sa, ca = _matrix(ref, keys, False)
        sb, cb = _matrix(other, keys, False)
        parts = []
        for w in _boot_weights(n, n_boot, seed):
            with np.errstate(invalid="ignore", divide="ignore"):
                parts.append((w @ sb) / (w @ cb) - (w @ sa) / (w @ ca))
        est = np.concatenate(parts)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanquantile(est, 0.025, axis=0), np.nanquantile(est, 0.975, axis=0)
    return [FeatureDiff(common[j], int(ta[common[j]][2]), _f(ma[j]), _f(mb[j]), _f(diff[j]), _f(lo[i]), _f(hi[i]))
            for i, j in enumerate(order)]


def distribution(model: str, per_review: Sequence[Sequence[Feature]], edges: np.ndarray | None = None,
                 bins: int = 40) -> Distribution:
    vals = np.array([f.value for feats in per_review for f in feats], dtype=float)
    if len(vals) == 0:
        return Distribution(model, 0, None, None, None, {}, [], [], vals)
    if edges is None:
        lo, hi = float(vals.min()), float(vals.max())
        if hi - lo <= ZERO:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
    counts, _ = np.histogram(vals, bins=edges)
    qs = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
    qv = np.quantile(vals, qs)
    return Distribution(model, len(vals), _f(vals.mean()), _f(vals.std(ddof=1)) if len(vals) > 1 else None,
                        _f(np.abs(vals).mean()), {f"q{int(q * 100):02d}": _f(v) for q, v in zip(qs, qv)},
                        [float(e) for e in edges], [int(c) for c in counts], vals)


# -- triage ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TriageRow(_Dict):
    """One review for the review browser. ``score`` = (1 - Spearman) + 3 if the predictions
    differ, so every flip ranks above every non-flip, then the most disagreeing explanations
    come first (Spearman None counts as 0)."""

    review_id: str
    label: int | None
    pred_ref: int | None
    pred_other: int | None
    conf_ref: float | None      # probability of the predicted class
    conf_other: float | None
    spearman: float | None
    flip: bool
    score: float


def _triage_rows(ids: Sequence[str], labels: Mapping[str, int], preds: Mapping[str, dict], opreds: Mapping[str, dict],
                 spear: Mapping[str, float | None]) -> list[TriageRow]:
    out = []
    for rid in ids:
        pa, pb = preds.get(rid), opreds.get(rid)
        ya = pa["pred"] if pa else None
        yb = pb["pred"] if pb else None
        flip = ya is not None and yb is not None and ya != yb
        s = spear.get(rid)
        score = (1.0 - (s if s is not None else 0.0)) + (3.0 if flip else 0.0)
        out.append(TriageRow(rid, labels.get(rid), ya, yb, _conf(pa), _conf(pb), s, flip, round(score, 12)))
    out.sort(key=lambda r: (-r.score, r.review_id))
    return out


def _conf(p: Mapping[str, Any] | None) -> float | None:
    if not p:
        return None
    pp = _f(p.get("p_pos"))
    if pp is None:
        return None
    return pp if p["pred"] == 1 else 1.0 - pp


# -- loading ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairContext:
    """What a comparison is about: the experiment, the two models and the settings."""

    experiment: str
    ref: str
    other: str
    ref_id: str
    other_id: str
    settings_hash: str
    noise_hash: str | None
    predict_hash: str | None
    explain_ids: tuple[str, ...]
    preset: dict


def experiment_preset(store: Store, experiment: str) -> dict:
    rows = [e for e in store.experiments() if e["name"] == experiment]
    if not rows:
        names = [e["name"] for e in store.experiments()]
        raise BadInput(f"no experiment named {experiment!r} in this workspace",
                       f"use one of: {', '.join(names)}" if names else "run `shapdiff run` first")
    return json.loads(rows[0]["preset"])


def resolve_pair(store: Store, experiment: str | None = None, ref: str | None = None,
                 other: str | None = None, *, settings_hash: str | None = None) -> PairContext:
    """The experiment (default: latest), reference (default: its reference model) and other
    (default: its first compressed model), with the explanation settings hashes."""
    from engine.config import parse_preset
    from engine.jobs import explain_hash, require_experiment
    from engine.predict import predict_settings
    from engine.provenance import settings_hash as shash

    exp = require_experiment(store, experiment)
    preset_d = experiment_preset(store, exp)
    models = store.experiment_models(exp)
    by_name = {m["name"]: m for m in models}
    names = ", ".join(by_name) or "(none)"
    ref = ref if ref is not None else reference_name(models, exp)
    if other is None:
        others = [m["name"] for m in models if m["name"] != ref and m["role"] != "reference"]
        others = others or [m["name"] for m in models if m["name"] != ref]
        if not others:
            raise BadInput(f"experiment {exp!r} has no model to compare with {ref!r}",
                           "add a compressed model to the preset and run it")
        other = others[0]
    for n in (ref, other):
        if n not in by_name:
            raise BadInput(f"no model named {n!r} in experiment {exp!r}", f"use one of: {names}")
    if ref == other:
        raise BadInput(f"cannot compare {ref!r} with itself this way",
                       "pick two different models (the noise floor already compares the reference with itself)")
    preset = parse_preset(preset_d, f"experiment {exp}")
    main = settings_hash or explain_hash(preset)
    noise = (explain_hash(preset, preset.explain.noise_seed)
             if preset.explain.noise_seed is not None and settings_hash is None else None)
    p_hash = shash(predict_settings(preset.predict.max_length, preset.predict.dtype, preset.predict.truncation))
    return PairContext(exp, ref, other, by_name[ref]["id"], by_name[other]["id"], main, noise, p_hash,
                       tuple(store.sample_ids(exp, "explain")), preset_d)


def load_explanations(store: Store, model_id: str, settings_hash: str,
                      review_ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """review id -> explanation row (id, review_id, base_value, fx, output) with its "tokens",
    in two queries. Only the given reviews when ``review_ids`` is set."""
    rows = {r["id"]: dict(r, tokens=[]) for r in store.db.query(
        "SELECT id, review_id, base_value, fx, output, n_tokens, truncated FROM explanations"
        " WHERE model_id = ? AND settings_hash = ?", [model_id, settings_hash])}
    if review_ids is not None:
        wanted = set(review_ids)
        rows = {k: v for k, v in rows.items() if v["review_id"] in wanted}
    if not rows:
        return {}
    for t in store.db.query(
            "SELECT a.explanation_id AS eid, a.position, a.token, a.start, a.end, a.value, a.special"
            " FROM attributions a JOIN explanations e ON e.id = a.explanation_id"
            " WHERE e.model_id = ? AND e.settings_hash = ? ORDER BY a.explanation_id, a.position",
            [model_id, settings_hash]):
        row = rows.get(t.pop("eid"))
        if row is not None:
            row["tokens"].append(t)
    return {r["review_id"]: r for r in rows.values()}


def _predictions(store: Store, model_id: str, ids: Sequence[str], p_hash: str | None) -> dict[str, dict]:
    rows = store.predictions(model_id, ids, settings_hash=p_hash) if p_hash else []
    if not rows:
        rows = store.predictions(model_id, ids)
    return {r["review_id"]: r for r in rows}


# -- the report ------------------------------------------------------------------------------

@dataclass
class PairReport(_Dict):
    """Everything compared between a reference and another model (see the module docstring).

    ``review_ids``: reviews both explained with the main settings, in sample order.
    ``top_features`` / ``distribution``: keyed by model name (ref, other) at ``level``.
    ``agreement``: keyed by level ("word" and "token"). ``faithfulness``: keyed by model
    name, None when not stored. ``notes``: what is missing or was left out, for people.
    """

    experiment: str
    ref: str
    other: str
    ref_model_id: str
    other_model_id: str
    level: str
    settings_hash: str
    noise_hash: str | None
    n_reviews: int
    review_ids: list[str]
    min_freq: int
    n_boot: int
    seed: int
    top_features: dict[str, list[FeatureStat]]
    distribution: dict[str, Distribution]
    differences: list[FeatureDiff]
    magnitude: MagnitudeReport
    agreement: dict[str, AgreementReport]
    faithfulness: dict[str, Any]
    triage: list[TriageRow]
    noise_n: int = 0
    notes: list[str] = field(default_factory=list)
    noise_identical: bool = False   # the noise-seed explanations equal the main ones: a zero floor

    def summary_dict(self) -> dict[str, Any]:
        """The compact form (what `shapdiff compare --json` prints): no per-review rows."""
        agr = {}
        for lvl, a in self.agreement.items():
            agr[lvl] = {
                "mean": {m: a.summary[m].mean for m in METRICS},
                "ci": {m: [a.summary[m].ci_low, a.summary[m].ci_high] for m in METRICS},
                "noise_floor": {m: a.noise_mean(m) for m in METRICS} if a.noise else None,
                "floor": {m: a.floor[m].to_dict() for m in a.floor},
                "splits": a.splits,
            }
        return json_safe({
            "experiment": self.experiment, "ref": self.ref, "other": self.other, "level": self.level,
            "settings_hash": self.settings_hash, "noise_hash": self.noise_hash,
            "n_reviews": self.n_reviews, "noise_n": self.noise_n, "noise_identical": self.noise_identical, "n_boot": self.n_boot, "seed": self.seed,
            "magnitude": {"raw": self.magnitude.raw.to_dict(), "normalised": self.magnitude.normalised.to_dict()},
            "agreement": agr,
            "faithfulness": {k: (v.to_dict() if v is not None else None) for k, v in self.faithfulness.items()},
            "top_features": {k: [f.to_dict() for f in v] for k, v in self.top_features.items()},
            "differences": [d.to_dict() for d in self.differences],
            "distribution": {k: v.to_dict() for k, v in self.distribution.items()},
            "triage_top": [t.to_dict() for t in self.triage[:10]],
            "notes": self.notes,
        })


def _agreement_report(level: str, ids: Sequence[str], fa: Mapping[str, list[Feature]], fb: Mapping[str, list[Feature]],
                      fn: Mapping[str, list[Feature]], groups: Mapping[str, Mapping[str, str]],
                      n_boot: int, seed: int) -> AgreementReport:
    rows = [features_agreement(fa[r], fb[r], level, r) for r in ids]
    summary = {m: summarize([row.metric(m) for row in rows], n_boot, seed) for m in METRICS}
    splits: dict[str, dict[str, dict[str, float | None]]] = {}
    for split, assign in groups.items():
        out: dict[str, dict[str, float | None]] = {}
        for g in sorted(set(assign.values())):
            sel = [row for row in rows if assign.get(row.review_id) == g]
            d: dict[str, float | None] = {"n": len(sel)}
            for m in METRICS:
                v = [row.metric(m) for row in sel if row.metric(m) is not None]
                d[m] = _f(np.mean(v)) if v else None
            out[g] = d
        splits[split] = out
    noise_rows = [features_agreement(fa[r], fn[r], level, r) for r in ids if r in fn]
    noise = floor = None
    if noise_rows:
        noise = {m: summarize([row.metric(m) for row in noise_rows], n_boot, seed) for m in METRICS}
        fv = {m: {row.review_id: row.metric(m) for row in noise_rows} for m in METRICS}
        floor = {m: floor_comparison(m, {row.review_id: row.metric(m) for row in rows}, fv[m], n_boot, seed)
                 for m in METRICS}
    return AgreementReport(level, rows, summary, splits, noise_rows, noise, floor or {})


def pair_report(store: Store, experiment: str | None = None, ref: str | None = None, other: str | None = None, *,
                level: Level = "word", n_boot: int = 1000, seed: int = 0, min_freq: int = 5, top_n: int = 20,
                settings_hash: str | None = None, alpha: float = ALPHA) -> PairReport:
    """Compare ``other`` with ``ref`` over the reviews both explained (see the module docstring).

    Raises BadInput for an unknown experiment or model name, a pair with no common
    explained reviews, or a bad level. A single common review gives a report whose tests
    and intervals are None (noted in ``notes``).
    """
    if level not in LEVELS:
        raise BadInput(f"unknown comparison level {level!r}", "use 'word' or 'token'")
    ctx = resolve_pair(store, experiment, ref, other, settings_hash=settings_hash)
    notes: list[str] = []
    sample = list(ctx.explain_ids)
    ea = load_explanations(store, ctx.ref_id, ctx.settings_hash)
    eb = load_explanations(store, ctx.other_id, ctx.settings_hash)
    en = load_explanations(store, ctx.ref_id, ctx.noise_hash) if ctx.noise_hash else {}
    order = sample + sorted((set(ea) & set(eb)) - set(sample))
    ids = [r for r in order if r in ea and r in eb]
    if not ids:
        raise BadInput(
            f"{ctx.ref!r} and {ctx.other!r} have no review explained by both with the experiment's settings "
            f"(stored: {len(ea)} for {ctx.ref}, {len(eb)} for {ctx.other})",
            f"run `shapdiff run` for experiment {ctx.experiment!r} to compute the explanations")
    missing_a, missing_b = len(set(sample) - set(ea)), len(set(sample) - set(eb))
    if missing_a or missing_b:
        notes.append(f"explain sample of {len(sample)}: {missing_a} unexplained for {ctx.ref}, "
                     f"{missing_b} for {ctx.other}; compared on the {len(ids)} explained by both")
    if len(ids) < 2:
        notes.append("a single common review: tests and confidence intervals are undefined (None)")
    if not ctx.noise_hash:
        notes.append("no noise floor: the preset has no explain.noise_seed")
    elif not en:
        notes.append(f"no noise floor: {ctx.ref} was not re-explained with the noise seed")
    en = {r: en[r] for r in ids if r in en}
    noise_identical = bool(en) and all(_same_values(ea[r], en[r]) for r in en)
    if noise_identical:
        notes.append(
            f"the noise floor is zero: {ctx.ref}'s re-explanation with the noise seed is identical to its main "
            "explanation (the explainer is deterministic at these settings), so it measures no explainer noise "
            "and any difference counts as beyond it; a floor that also covers the budget's approximation needs "
            "a re-explanation with another max_evals")
    reviews = store.reviews(ids)
    texts = {r: (reviews[r]["text"] if r in reviews else None) for r in ids}
    labels = {r: int(reviews[r]["label"]) for r in ids if r in reviews}
    pa = _predictions(store, ctx.ref_id, ids, ctx.predict_hash)
    pb = _predictions(store, ctx.other_id, ids, ctx.predict_hash)
    if len(pa) < len(ids) or len(pb) < len(ids):
        notes.append("some explained reviews have no stored prediction: left out of the correct/flip splits")

    fa = {lvl: {r: features(ea[r]["tokens"], lvl, texts[r]) for r in ids} for lvl in LEVELS}
    fb = {lvl: {r: features(eb[r]["tokens"], lvl, texts[r]) for r in ids} for lvl in LEVELS}
    fn = {lvl: {r: features(en[r]["tokens"], lvl, texts[r]) for r in en} for lvl in LEVELS}
    feats_a = [fa[level][r] for r in ids]
    feats_b = [fb[level][r] for r in ids]
    feats_n = fn[level]
    if all(not any(abs(f.value) > ZERO for f in fs) for fs in feats_a + feats_b):
        notes.append("all attributions are zero: agreement metrics are undefined (None)")

    # magnitude
    mrows = []
    for r, xa, xb in zip(ids, feats_a, feats_b):
        ga, gb = abs(ea[r]["fx"] - ea[r]["base_value"]), abs(eb[r]["fx"] - eb[r]["base_value"])
        ma, mb = _mean_abs(xa), _mean_abs(xb)
        mn = _mean_abs(feats_n[r]) if r in feats_n else None
        gn = abs(en[r]["fx"] - en[r]["base_value"]) if r in en else None
        mrows.append(MagnitudeRow(
            r, ma, mb, _norm(ma, ga), _norm(mb, gb), _f(ga), _f(gb), mn, _norm(mn, gn)))
    magnitude = MagnitudeReport(mrows, magnitude_test("raw", mrows, n_boot, seed, alpha),
                                magnitude_test("normalised", mrows, n_boot, seed, alpha))
    if any(r.ref_norm is None or r.other_norm is None for r in mrows):
        notes.append("reviews with f(x) = base value are left out of the normalised magnitude")

    # agreement at both levels, splits and floor
    groups: dict[str, dict[str, str]] = {
        "class": {r: ("positive" if labels[r] else "negative") for r in ids if r in labels},
        "flip": {r: ("flipped" if pa[r]["pred"] != pb[r]["pred"] else "same prediction")
                 for r in ids if r in pa and r in pb},
        "reference_correct": {r: ("correct" if pa[r]["pred"] == labels[r] else "wrong")
                              for r in ids if r in pa and r in labels},
        "other_correct": {r: ("correct" if pb[r]["pred"] == labels[r] else "wrong")
                          for r in ids if r in pb and r in labels},
    }
    agreement = {lvl: _agreement_report(lvl, ids, fa[lvl], fb[lvl], fn[lvl], groups, n_boot, seed) for lvl in LEVELS}
    if agreement["token"].summary["spearman"].n == 0 and agreement["word"].summary["spearman"].n > 0:
        notes.append("token level: the two models' tokens do not line up (different tokenizers); use word level")

    # study figures as data
    tops = {ctx.ref: top_features(feats_a, min_freq=min_freq, top_n=top_n, n_boot=n_boot, seed=seed),
            ctx.other: top_features(feats_b, min_freq=min_freq, top_n=top_n, n_boot=n_boot, seed=seed)}
    allv = [f.value for fs in feats_a + feats_b for f in fs]
    edges = None
    if allv:
        lo, hi = min(allv), max(allv)
        if hi - lo <= ZERO:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, 41)
    dists = {ctx.ref: distribution(ctx.ref, feats_a, edges), ctx.other: distribution(ctx.other, feats_b, edges)}
    diffs = feature_differences(feats_a, feats_b, min_freq=min_freq, top_n=top_n, n_boot=n_boot, seed=seed)

    # faithfulness (stored by engine.faithfulness)
    from engine.faithfulness import faithfulness_summary

    faith = {ctx.ref: faithfulness_summary(store, ctx.ref_id, ctx.settings_hash, ids, name=ctx.ref,
                                           n_boot=n_boot, seed=seed),
             ctx.other: faithfulness_summary(store, ctx.other_id, ctx.settings_hash, ids, name=ctx.other,
                                             n_boot=n_boot, seed=seed)}

    spear = {row.review_id: row.spearman for row in agreement[level].rows}
    tri = _triage_rows(ids, labels, pa, pb, spear)
    return PairReport(ctx.experiment, ctx.ref, ctx.other, ctx.ref_id, ctx.other_id, level, ctx.settings_hash,
                      ctx.noise_hash, len(ids), ids, min_freq, n_boot, seed, tops, dists, diffs, magnitude,
                      agreement, faith, tri, len(en), notes, noise_identical)


def _same_values(a: Mapping[str, Any], b: Mapping[str, Any], tol: float = 1e-9) -> bool:
    ta, tb = a["tokens"], b["tokens"]
    return len(ta) == len(tb) and all(abs(x["value"] - y["value"]) <= tol for x, y in zip(ta, tb))


def _norm(m: float | None, gap: float | None) -> float | None:
    if m is None or gap is None or gap <= 1e-9:
        return None
    return _f(m / gap)


def pair_reports(store: Store, experiment: str | None = None, ref: str | None = None,
                 others: Sequence[str] | None = None, **kwargs: Any) -> list[PairReport]:
    """The reference against each of ``others`` (default: every other model of the experiment)."""
    from engine.jobs import require_experiment

    exp = require_experiment(store, experiment)
    models = store.experiment_models(exp)
    ref = ref if ref is not None else reference_name(models, exp)
    if others is None:
        others = [m["name"] for m in models if m["name"] != ref and m["role"] == "compressed"]
        others = others or [m["name"] for m in models if m["name"] != ref]
    return [pair_report(store, exp, ref, o, **kwargs) for o in others]


def triage(store: Store, experiment: str | None = None, ref: str | None = None, other: str | None = None, *,
           level: Level = "word", include_unexplained: bool = False) -> list[TriageRow]:
    """Reviews ranked for the review browser: prediction flips first, then by 1 - Spearman.

    Only reviews both models explained, unless ``include_unexplained`` (then every review
    of the metrics sample with both predictions; Spearman None for the unexplained).
    """
    if level not in LEVELS:
        raise BadInput(f"unknown comparison level {level!r}", "use 'word' or 'token'")
    ctx = resolve_pair(store, experiment, ref, other)
    ea = load_explanations(store, ctx.ref_id, ctx.settings_hash)
    eb = load_explanations(store, ctx.other_id, ctx.settings_hash)
    ids = [r for r in ctx.explain_ids if r in ea and r in eb]
    ids += sorted((set(ea) & set(eb)) - set(ids))
    all_ids = list(ids)
    if include_unexplained:
        seen = set(ids)
        all_ids += [r for r in store.sample_ids(ctx.experiment, "metrics") if r not in seen]
    reviews = store.reviews(all_ids)
    texts = {r: reviews[r]["text"] if r in reviews else None for r in ids}
    spear = {r: review_agreement(ea[r], eb[r], level, text=texts[r], review_id=r).spearman for r in ids}
    pa = _predictions(store, ctx.ref_id, all_ids, ctx.predict_hash)
    pb = _predictions(store, ctx.other_id, all_ids, ctx.predict_hash)
    labels = {r: int(v["label"]) for r, v in reviews.items()}
    if include_unexplained:
        all_ids = [r for r in all_ids if r in set(ids) or (r in pa and r in pb)]
    return _triage_rows(all_ids, labels, pa, pb, spear)


# -- plain text -------------------------------------------------------------------------------

def _fmt(x: float | None, nd: int = 3, sign: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.{nd}f}" if sign else f"{x:.{nd}f}"


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def format_report(rep: PairReport, metrics: Sequence[str] = ("spearman", "kendall", "jaccard5", "jaccard10",
                                                              "sign5", "feature5", "rank5", "ksign5",
                                                              "signed_rank5")) -> str:
    """The report as readable plain text (what `shapdiff compare` prints)."""
    L = [f"{rep.ref} (reference) vs {rep.other}: {rep.n_reviews} reviews explained by both, "
         f"{rep.level} level, experiment {rep.experiment}"]
    L.append("")
    L.append("magnitude: mean |SHAP| per review, paired Wilcoxon signed-rank (effect: rank-biserial, + = other larger)")
    for t in (rep.magnitude.raw, rep.magnitude.normalised):
        verdict = ("no significant difference" if t.larger is None else
                   f"{rep.other if t.larger == 'other' else rep.ref} larger")
        if t.exceeds_floor is not None and t.larger is not None:
            verdict += ", beyond the noise floor" if t.exceeds_floor else ", but within the noise floor"
        name = "raw" if t.measure == "raw" else "normalised by |f(x)-base|"
        L.append(f"  {name}:")
        L.append(f"    {rep.ref} {_fmt(t.mean_ref, 4)}  {rep.other} {_fmt(t.mean_other, 4)}  "
                 f"diff {_fmt(t.mean_diff, 4, True)} [95% CI {_fmt(t.diff_ci_low, 4, True)}, {_fmt(t.diff_ci_high, 4, True)}]"
                 f"  median ratio {_fmt(t.median_ratio, 2)}")
        L.append(f"    W = {_fmt(t.statistic, 1)}  p = {_fmt_p(t.p_value)}  r = {_fmt(t.effect_size, 2, True)}"
                 f"  n = {t.n}  -> {verdict}")
    L.append("")
    for lvl in (rep.level,) + tuple(x for x in LEVELS if x != rep.level):
        a = rep.agreement[lvl]
        floor_txt = f"noise floor: {rep.ref} vs itself, other seed (n={len(a.noise_rows)})" if a.noise else "no noise floor"
        L.append(f"agreement, {lvl} level (mean over reviews [95% CI]; {floor_txt})")
        L.append(f"  {'metric':<28} {'pair':>7} {'95% CI':>17} {'floor':>7} {'gap':>7}  real?")
        for m in metrics:
            s = a.summary[m]
            fl = a.floor.get(m)
            real = "n/a" if fl is None or fl.real is None else ("yes" if fl.real else "no")
            ci = f"[{_fmt(s.ci_low, 2)}, {_fmt(s.ci_high, 2)}]"
            L.append(f"  {METRIC_LABELS[m]:<28} {_fmt(s.mean):>7} {ci:>17} {_fmt(a.noise_mean(m)):>7} "
                     f"{_fmt(fl.gap if fl else None):>7}  {real}")
        if lvl == rep.level:
            for split, groups in a.splits.items():
                parts = [f"{g} {_fmt(d.get('spearman'), 2)} (n={d['n']})" for g, d in groups.items()]
                if parts:
                    L.append(f"  Spearman by {split.replace('_', ' ')}: " + "; ".join(parts))
        L.append("")
    L.append("faithfulness (ERASER, AOPC over removing the top 1/5/10/20% of tokens; higher comprehensiveness "
             "and lower sufficiency = more faithful)")
    for name, f in rep.faithfulness.items():
        if f is None:
            L.append(f"  {name}: not computed (see `shapdiff compare --help`)")
        else:
            L.append(f"  {name}: comprehensiveness {_fmt(f.comprehensiveness.mean)} "
                     f"[{_fmt(f.comprehensiveness.ci_low)}, {_fmt(f.comprehensiveness.ci_high)}]  "
                     f"sufficiency {_fmt(f.sufficiency.mean)} [{_fmt(f.sufficiency.ci_low)}, "
                     f"{_fmt(f.sufficiency.ci_high)}]  n = {f.n}  ({f.removal})")
    L.append("")
    flips = sum(1 for t in rep.triage if t.flip)
    L.append(f"triage: {flips} prediction flips; most disagreeing reviews:")
    for t in rep.triage[:5]:
        L.append(f"  {t.review_id}  label {t.label}  pred {t.pred_ref}/{t.pred_other}  "
                 f"Spearman {_fmt(t.spearman, 2)}{'  FLIP' if t.flip else ''}")
    if rep.top_features.get(rep.ref) or rep.differences:
        L.append("")
        L.append(f"top features by mean |SHAP| (min frequency {rep.min_freq}):")
        for name in (rep.ref, rep.other):
            tops = rep.top_features.get(name, [])[:8]
            L.append(f"  {name}: " + ", ".join(f"{t.feature} {_fmt(t.mean_abs, 2)}" for t in tops))
        if rep.differences:
            L.append(f"  largest differences of mean signed SHAP ({rep.other} - {rep.ref}): " + ", ".join(
                f"{d.feature} {_fmt(d.diff, 2, True)}" for d in rep.differences[:8]))
    if rep.notes:
        L.append("")
        L.extend(f"note: {n}" for n in rep.notes)
    return "\n".join(L)


# -- the `shapdiff compare` command --------------------------------------------------------

def add_compare_parser(sub: Any, common: Any) -> None:
    """Register `shapdiff compare` (called from engine.cli's parser)."""
    p = sub.add_parser("compare", help="magnitude, agreement (with its noise floor) and faithfulness: "
                                       "the reference against each compressed model")
    common(p, data=True)
    p.add_argument("--experiment", help="experiment (preset) name; default: the latest")
    p.add_argument("--ref", metavar="MODEL", help="reference model (default: the experiment's reference)")
    p.add_argument("--other", metavar="MODEL", action="append",
                   help="compare with this model (repeatable; default: every compressed model)")
    p.add_argument("--level", choices=LEVELS, default="word", help="features compared (default: word)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the intervals (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--min-freq", type=int, default=5, help="minimum occurrences of a feature in the top-feature tables")
    p.add_argument("--faithfulness", action="store_true",
                   help="first compute missing faithfulness scores (loads the models; needs their weights)")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: Any) -> int:
    from engine.cli import _open_existing_store, _workspace, print_json, progress_reporter
    from engine.jobs import require_experiment

    if args.n_boot < 0:
        raise BadInput("--n-boot must be 0 or more", "e.g. --n-boot 1000")
    with _open_existing_store(args) as store:
        exp = require_experiment(store, args.experiment)
        if args.faithfulness:
            from engine.faithfulness import compute_faithfulness

            names = None
            if args.other:
                ctx = resolve_pair(store, exp, args.ref, args.other[0])
                names = [ctx.ref, *args.other]
            elif args.ref:
                names = [args.ref] + [m["name"] for m in store.experiment_models(exp) if m["name"] != args.ref]
            with progress_reporter(args.quiet) as report:
                runs = compute_faithfulness(store, _workspace(args), exp, names,
                                            data_path=getattr(args, "data_path", None), on_progress=report)
            if not args.json:
                for r in runs:
                    print(f"faithfulness {r.model}: {r.computed} computed, {r.skipped} stored"
                          + (f", {r.missing} without explanation" if r.missing else "")
                          + (f", {r.failed} not aligned" if r.failed else ""))
                print()
        reports = pair_reports(store, exp, args.ref, args.other, level=args.level, n_boot=args.n_boot,
                               seed=args.seed, min_freq=args.min_freq)
    if args.json:
        print_json({"experiment": exp, "ref": reports[0].ref if reports else args.ref,
                    "pairs": [r.summary_dict() for r in reports]})
        return 0
    if not reports:
        print(f"experiment {exp}: nothing to compare (one model only)")
    print(("\n\n" + "=" * 78 + "\n\n").join(format_report(r) for r in reports))
    return 0
