"""Plot data as plain objects, and the one renderer for files (matplotlib, object API).

The TUI draws the same :class:`FigureSpec` objects with plotext; exports draw them with
:func:`render_matplotlib`. Nothing here touches pyplot's global state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

FORMATS = ("png", "svg", "pdf")
Kind = Literal["barh", "bar", "hist", "line"]


@dataclass(frozen=True)
class Series:
    """One data series. For bar kinds ``x`` holds category labels; for hist, ``y`` holds
    the raw values (``x`` unused); for line, ``x`` and ``y`` are numbers."""

    label: str
    y: tuple[float, ...]
    x: tuple = ()
    err_low: tuple[float, ...] | None = None    # confidence interval bounds (absolute values)
    err_high: tuple[float, ...] | None = None


@dataclass(frozen=True)
class FigureSpec:
    key: str                      # stable file stem, e.g. "top_features-teacher"
    kind: Kind
    title: str
    xlabel: str
    ylabel: str
    series: tuple[Series, ...]
    note: str = ""                # a caption line (sample size, CI level, ...)
    bins: int = 40                # hist only
    vline: float | None = None    # a reference line (e.g. the noise floor) on the x axis
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def render_matplotlib(spec: FigureSpec, *, width: float = 8.0, height: float | None = None):
    """A matplotlib Figure (object API, Agg canvas) drawing ``spec``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_cat = max((len(s.x) for s in spec.series), default=0)
    if height is None:
        height = max(3.5, 0.32 * n_cat + 1.5) if spec.kind == "barh" else 4.5
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    k = len(spec.series)
    if spec.kind in ("barh", "bar"):
        labels = list(spec.series[0].x) if spec.series else []
        pos = list(range(len(labels)))
        h = 0.8 / max(1, k)
        for j, s in enumerate(spec.series):
            offs = [p - 0.4 + h * (j + 0.5) for p in pos]
            err = None
            if s.err_low is not None and s.err_high is not None:
                err = [[max(0.0, v - lo) for v, lo in zip(s.y, s.err_low)],
                       [max(0.0, hi - v) for v, hi in zip(s.y, s.err_high)]]
            if spec.kind == "barh":
                ax.barh(offs, s.y, height=h, xerr=err, label=s.label, capsize=2)
            else:
                ax.bar(offs, s.y, width=h, yerr=err, label=s.label, capsize=2)
        if spec.kind == "barh":
            ax.set_yticks(pos, labels)
            ax.invert_yaxis()
            ax.axvline(0, color="black", linewidth=0.6)
        else:
            ax.set_xticks(pos, labels, rotation=45, ha="right")
    elif spec.kind == "hist":
        for s in spec.series:
            ax.hist(list(s.y), bins=spec.bins, alpha=0.55 if k > 1 else 0.9, label=s.label)
    else:
        for s in spec.series:
            ax.plot(list(s.x), list(s.y), marker="o", label=s.label)
    if spec.vline is not None:
        ax.axvline(spec.vline, color="grey", linestyle="--", linewidth=1)
    ax.set_title(spec.title)
    ax.set_xlabel(spec.xlabel)
    ax.set_ylabel(spec.ylabel)
    if k > 1 or spec.kind != "barh":
        ax.legend(loc="best", fontsize="small")
    if spec.note:
        fig.text(0.01, 0.01, spec.note, fontsize=7, color="dimgray")
    fig.tight_layout(rect=(0, 0.03 if spec.note else 0, 1, 1))
    return fig


def save_figure(spec: FigureSpec, folder: str | Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write ``spec`` into ``folder`` as KEY.FORMAT for each format; returns the paths.

    Output is deterministic: fixed metadata (no dates), fixed SVG ids.
    """
    import matplotlib

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fig = render_matplotlib(spec)
    out = []
    for fmt in formats:
        if fmt not in FORMATS:
            from engine.errors import BadInput

            raise BadInput(f"unknown figure format {fmt!r}", f"use {', '.join(FORMATS)}")
        path = folder / f"{safe_stem(spec.key)}.{fmt}"
        meta = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None},
                "pdf": {"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None}}[fmt]
        with matplotlib.rc_context({"svg.hashsalt": "shapdiff"}):
            fig.savefig(path, format=fmt, metadata=meta)
        out.append(path)
    return out


def safe_stem(key: str) -> str:
    """A file name part that cannot escape its folder."""
    import re

    stem = re.sub(r"[^\w.\-]+", "_", key).strip("._") or "figure"
    return stem[:120]


# -- builders: a compare.PairReport -> the study's figures ------------------------------------
# Keys are stable file stems (one folder per pair in exports): top_features-MODEL (figures 1-2),
# distribution (figure 3), top_differences (figure 4), agreement-METRIC, faithfulness.

def _ci_pair(lo: float | None, hi: float | None, v: float | None) -> tuple[float, float]:
    v = 0.0 if v is None else v
    return (v if lo is None else lo, v if hi is None else hi)


def top_features_figure(report, model: str) -> FigureSpec | None:
    """Figures 1-2: a model's features by mean |SHAP| with bootstrap CIs (None when empty)."""
    stats = report.top_features.get(model) or []
    if not stats:
        return None
    cis = [_ci_pair(s.ci_low, s.ci_high, s.mean_abs) for s in stats]
    return FigureSpec(
        key=f"top_features-{model}", kind="barh",
        title=f"{model}: top {len(stats)} {report.level}s by mean |SHAP|",
        xlabel="mean |SHAP value|", ylabel=report.level,
        series=(Series(model, tuple(s.mean_abs or 0.0 for s in stats), tuple(s.feature for s in stats),
                       tuple(c[0] for c in cis), tuple(c[1] for c in cis)),),
        note=f"{report.n_reviews} reviews; {report.level}s occurring at least {report.min_freq} times; "
             f"95% bootstrap CI over reviews ({report.n_boot} resamples)",
        extra={"figure": 1 if model == report.ref else 2, "model": model})


def distribution_figure(report) -> FigureSpec | None:
    """Figure 3: all SHAP values of each model (shared bins)."""
    series = tuple(Series(m, tuple(float(v) for v in d.values)) for m, d in report.distribution.items() if d.n)
    if not series:
        return None
    sizes = ", ".join(f"{m} n={d.n}, mean |v| {d.mean_abs:.3g}" for m, d in report.distribution.items() if d.n)
    return FigureSpec(key="distribution", kind="hist", title=f"Distribution of {report.level} SHAP values",
                      xlabel="SHAP value", ylabel=f"{report.level}s", series=series, bins=40,
                      note=f"{report.n_reviews} reviews; {sizes}", extra={"figure": 3})


def differences_figure(report) -> FigureSpec | None:
    """Figure 4: features with the largest difference of mean attribution (other - reference)."""
    diffs = report.differences
    if not diffs:
        return None
    cis = [_ci_pair(d.ci_low, d.ci_high, d.diff) for d in diffs]
    return FigureSpec(
        key="top_differences", kind="barh",
        title=f"Top {len(diffs)} {report.level}s by difference of mean SHAP ({report.other} - {report.ref})",
        xlabel=f"mean SHAP, {report.other} - {report.ref}", ylabel=report.level,
        series=(Series(f"{report.other} - {report.ref}", tuple(d.diff or 0.0 for d in diffs),
                       tuple(d.feature for d in diffs), tuple(c[0] for c in cis), tuple(c[1] for c in cis)),),
        note=f"{report.n_reviews} reviews; at least {report.min_freq} occurrences in both; "
             f"95% paired bootstrap CI over reviews", extra={"figure": 4})


def agreement_figure(report, metric: str = "spearman", level: str | None = None) -> FigureSpec | None:
    """Per-review agreement histogram of the pair, with the noise floor's mean as a vertical line."""
    from engine.compare import METRIC_LABELS

    lvl = level or report.level
    a = report.agreement.get(lvl)
    if a is None:
        return None
    vals = tuple(float(v) for r in a.rows if (v := r.metric(metric)) is not None)
    if not vals:
        return None
    series = [Series(f"{report.ref} vs {report.other}", vals)]
    floor = a.noise_mean(metric)
    noise_vals = tuple(float(v) for r in a.noise_rows if (v := r.metric(metric)) is not None)
    if noise_vals:
        series.append(Series(f"{report.ref} vs itself (noise floor)", noise_vals))
    fl = a.floor.get(metric)
    verdict = "" if fl is None or fl.real is None else ("; gap beyond the floor" if fl.real else "; within the floor")
    key = f"agreement-{metric}" + ("" if lvl == report.level else f"-{lvl}")
    return FigureSpec(
        key=key, kind="hist", title=f"{METRIC_LABELS.get(metric, metric)} per review ({lvl} level)",
        xlabel=METRIC_LABELS.get(metric, metric), ylabel="reviews", series=tuple(series), bins=20, vline=floor,
        note=f"{len(vals)} reviews; dashed line: noise-floor mean" + (f" {floor:.3f}" if floor is not None else " (none)")
             + verdict, extra={"metric": metric, "level": lvl})


def agreement_figures(report, metrics: Sequence[str] = ("spearman", "jaccard5")) -> list[FigureSpec]:
    return [f for m in metrics if (f := agreement_figure(report, m)) is not None]


def faithfulness_figure(report) -> FigureSpec | None:
    """Comprehensiveness and sufficiency per model with bootstrap CIs (None when not stored)."""
    faith = {m: f for m, f in report.faithfulness.items() if f is not None}
    if not faith:
        return None
    cats = ("comprehensiveness", "sufficiency")
    series = []
    for m, f in faith.items():
        ss = (f.comprehensiveness, f.sufficiency)
        cis = [_ci_pair(s.ci_low, s.ci_high, s.mean) for s in ss]
        series.append(Series(m, tuple(s.mean or 0.0 for s in ss), cats,
                             tuple(c[0] for c in cis), tuple(c[1] for c in cis)))
    ns = ", ".join(f"{m} n={f.n}" for m, f in faith.items())
    return FigureSpec(key="faithfulness", kind="bar", title="Faithfulness (ERASER, AOPC over 1/5/10/20% of tokens)",
                      xlabel="", ylabel="change in predicted-class probability", series=tuple(series),
                      note=f"{ns}; higher comprehensiveness and lower sufficiency = more faithful; 95% bootstrap CI")


def pair_figures(report) -> list[FigureSpec]:
    """Every figure of a compare.PairReport: the study's four, agreement, faithfulness."""
    figs = [top_features_figure(report, report.ref), top_features_figure(report, report.other),
            distribution_figure(report), differences_figure(report), *agreement_figures(report),
            faithfulness_figure(report)]
    return [f for f in figs if f is not None]


study_figures = pair_figures
