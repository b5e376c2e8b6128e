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
