"""The self-contained ``report.html`` of an export.

One file, nothing fetched: styles inline, figures inlined as base64 PNG, no script at all
(a Content-Security-Policy forbids scripts and remote loads, as a second line of defence).
Review text and model names are data: every piece of it goes through :func:`html.escape`.

The renderer takes plain objects (built by :mod:`engine.export`), so it can be tested
without a workspace.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Diverging colours of the side-by-side views: toward positive (red), toward negative (blue).
POS_RGB = (214, 39, 40)
NEG_RGB = (31, 119, 180)


@dataclass(frozen=True)
class Side:
    """One model's view of one review."""

    model: str
    tokens: tuple[dict[str, Any], ...]        # position, token, start, end, value, special
    p_pos: float | None = None
    pred: int | None = None


@dataclass(frozen=True)
class ReviewView:
    review_id: str
    text: str
    label: int | None
    sides: tuple[Side, ...]
    disagreement: float | None = None
    detail: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class ReportPair:
    pair: Any                                   # engine.export.Pair
    statistics: dict[str, Any]
    figures: list[tuple[Any, bytes]]            # (FigureSpec, PNG bytes)
    reviews: list[ReviewView]
    notes: list[str] = field(default_factory=list)


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "—" if v is None else ("yes" if v else "no")
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        return f"{v:.4g}" if abs(v) < 1e-3 and v != 0 else f"{v:.3f}"
    return str(v)


# -- token colouring --------------------------------------------------------------------

def shared_scale(reviews: Sequence[ReviewView]) -> float:
    """The largest |attribution| over every shown token of every side: one scale for all."""
    vals = [abs(float(t["value"])) for r in reviews for s in r.sides for t in s.tokens if not t.get("special")]
    vals = [v for v in vals if math.isfinite(v)]
    return max(vals, default=0.0) or 1.0


def token_colour(value: float, scale: float) -> str:
    a = 0.0 if not math.isfinite(value) else min(1.0, abs(value) / scale) * 0.85
    r, g, b = POS_RGB if value > 0 else NEG_RGB
    return f"rgba({r},{g},{b},{a:.3f})"


def coloured_text(text: str, tokens: Sequence[dict[str, Any]], scale: float) -> str:
    """``text`` as escaped HTML with each explained token's characters on its colour.

    Tokens are placed by their character offsets into the review; text no token covers
    (spaces, a truncated tail) stays plain. Without usable offsets the tokens are shown
    one after another.
    """
    toks = [t for t in tokens if not t.get("special")]
    placed = [t for t in toks if t.get("end") is not None and t.get("start") is not None
              and 0 <= int(t["start"]) < int(t["end"]) <= len(text)]
    parts: list[str] = []
    if toks and not placed:
        for t in toks:
            parts.append(_span(str(t["token"]), t, scale) + " ")
        return "".join(parts)
    cursor = 0
    for t in sorted(placed, key=lambda t: (int(t["start"]), int(t["end"]))):
        start, end = max(int(t["start"]), cursor), int(t["end"])
        if end <= start:
            continue
        if start > cursor:
            gap = text[cursor:start]
            if cursor and gap.strip():  # the middle that head+tail truncation cut out
                parts.append('<span class="unexplained" title="not seen by the model (truncated)">'
                             f"{esc(gap)}</span>")
            else:
                parts.append(esc(gap))
        parts.append(_span(text[start:end], t, scale))
        cursor = end
    if cursor < len(text):
        tail = text[cursor:]
        if placed and tail.strip():
            parts.append(f'<span class="unexplained" title="not explained (beyond the model\'s maximum length)">'
                         f"{esc(tail)}</span>")
        else:
            parts.append(esc(tail))
    return "".join(parts)


def _span(shown: str, t: dict[str, Any], scale: float) -> str:
    v = float(t["value"])
    title = f"{t['token']}  {v:+.4f}"
    return f'<span class="tok" style="background:{token_colour(v, scale)}" title="{esc(title)}">{esc(shown)}</span>'


def legend(scale: float) -> str:
    stops = []
    for i in range(-4, 5):
        v = scale * i / 4
        stops.append(f'<span class="tok" style="background:{token_colour(v, scale)}">{v:+.2f}</span>')
    return ('<p class="legend">Colour scale, shared by both models and every review below: '
            + " ".join(stops) + " (attribution to the positive-class output; red pushes toward positive, "
            "blue toward negative)</p>")


# -- sections ------------------------------------------------------------------------------

def metrics_table(metrics: Sequence[Any]) -> str:
    rows = ["<table class=\"metrics\"><thead><tr><th>model</th><th>role</th><th>class</th><th>precision</th>"
            "<th>recall</th><th>F1</th><th>support</th><th>accuracy</th><th>n</th><th>confusion</th></tr></thead><tbody>"]
    for m in metrics:
        (tn, fp), (fn, tp) = m.confusion
        for i, c in enumerate(m.classes):
            first = i == 0
            span = f' rowspan="{len(m.classes)}"' if first else ""
            cells = [f"<td{span}>{esc(m.name)}</td><td{span}>{esc(m.role)}</td>" if first else "",
                     f"<td>{esc(c.label)}</td>",
                     *(f'<td class="num">{_fmt(x)}</td>' for x in (c.precision, c.recall, c.f1, c.support)),
                     (f'<td class="num"{span}>{_fmt(m.accuracy)}</td><td class="num"{span}>{m.n}</td>'
                      f"<td{span}>TN {tn}, FP {fp}<br>FN {fn}, TP {tp}"
                      + (f"<br>{m.truncated} truncated" if m.truncated else "") + "</td>") if first else ""]
            rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</tbody></table>")
    return "\n".join(rows)


def figure_html(spec: Any, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    cap = esc(spec.title) + (f"<br><small>{esc(spec.note)}</small>" if spec.note else "")
    return (f'<figure id="fig-{esc(spec.key)}"><img alt="{esc(spec.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{cap}</figcaption></figure>")


def review_html(r: ReviewView, scale: float, rank: int) -> str:
    label = {0: "negative", 1: "positive"}.get(r.label, "unknown") if r.label is not None else "unknown"
    dis = f"; 1 − Spearman {_fmt(r.disagreement)}" if r.disagreement is not None else ""
    preds = [s.pred for s in r.sides if s.pred is not None]
    if len(preds) == len(r.sides) == 2 and preds[0] != preds[1]:
        dis += "; the predictions differ"
    head = (f'<h4 id="review-{rank}">{rank}. review <code>{esc(r.review_id)}</code> '
            f"<small>(true label: {esc(label)}{dis})</small></h4>")
    cols = []
    for s in r.sides:
        pred = ""
        if s.p_pos is not None:
            verdict = "positive" if (s.pred if s.pred is not None else s.p_pos >= 0.5) else "negative"
            pred = f" <small>p(positive) = {s.p_pos:.3f}, predicts {verdict}</small>"
        body = coloured_text(r.text, s.tokens, scale) if s.tokens else '<em>not explained</em>'
        cols.append(f'<div class="side"><div class="model">{esc(s.model)}{pred}</div>'
                    f'<div class="text">{body}</div></div>')
    return f'<section class="review">{head}<div class="pair">{"".join(cols)}</div></section>'


def statistics_html(stats: Any, depth: int = 0) -> str:
    """A generic, readable rendering of nested statistics (dicts, lists, numbers)."""
    if isinstance(stats, dict):
        if not stats:
            return "<em>none</em>"
        items = "".join(f"<tr><th>{esc(k)}</th><td>{statistics_html(v, depth + 1)}</td></tr>"
                        for k, v in stats.items())
        return f'<table class="stats">{items}</table>'
    if isinstance(stats, list | tuple):
        if not stats:
            return "<em>none</em>"
        if all(not isinstance(v, dict | list | tuple) for v in stats):
            return esc(", ".join(_fmt(v) for v in stats))
        if len(stats) > 12:
            return esc(f"{len(stats)} entries (see statistics.json)")
        return "<ol>" + "".join(f"<li>{statistics_html(v, depth + 1)}</li>" for v in stats) + "</ol>"
    return esc(_fmt(stats))


def _ci(lo: Any, hi: Any) -> str:
    return "—" if lo is None or hi is None else f"[{_fmt(lo)}, {_fmt(hi)}]"


def _p(p: Any) -> str:
    if p is None:
        return "—"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def _yn(v: Any) -> str:
    return "—" if v is None else ("yes" if v else "no")


def magnitude_html(cmp: dict[str, Any]) -> str:
    """The magnitude test: is one model's mean |SHAP| larger, and beyond the noise floor?"""
    mag = cmp.get("magnitude") or {}
    ref, other = cmp.get("ref", "reference"), cmp.get("other", "other")
    if not mag:
        return ""
    out = ["<h3>Magnitude test</h3>",
           f"<p>Per review, the mean |SHAP| of each model; paired Wilcoxon signed-rank test, effect size = "
           f"matched-pairs rank-biserial r (positive: {esc(other)} larger); the noise floor is the reference "
           "against its own re-explanation with another seed.</p>",
           "<table><thead><tr><th>measure</th><th>n</th>"
           f"<th>{esc(ref)}</th><th>{esc(other)}</th><th>difference [95% CI]</th><th>median ratio</th>"
           "<th>W</th><th>p</th><th>r</th><th>larger</th><th>beyond noise floor</th><th>real</th></tr></thead><tbody>"]
    sentences = []
    for key, name in (("raw", "raw mean |SHAP|"), ("normalised", "normalised by |f(x) − base|")):
        t = mag.get(key)
        if not t:
            continue
        larger = {"other": other, "reference": ref}.get(t.get("larger"), "no significant difference")
        out.append(f"<tr><td>{esc(name)}</td><td class=\"num\">{t.get('n')}</td>"
                   f"<td class=\"num\">{_fmt(t.get('mean_ref'))}</td><td class=\"num\">{_fmt(t.get('mean_other'))}</td>"
                   f"<td class=\"num\">{_fmt(t.get('mean_diff'))} {_ci(t.get('diff_ci_low'), t.get('diff_ci_high'))}</td>"
                   f"<td class=\"num\">{_fmt(t.get('median_ratio'))}</td><td class=\"num\">{_fmt(t.get('statistic'))}</td>"
                   f"<td class=\"num\">{_p(t.get('p_value'))}</td><td class=\"num\">{_fmt(t.get('effect_size'))}</td>"
                   f"<td>{esc(larger)}</td><td>{_yn(t.get('exceeds_floor'))}</td><td>{_yn(t.get('real'))}</td></tr>")
        if t.get("larger"):
            verdict = (" and the difference exceeds the noise floor" if t.get("exceeds_floor") else
                       " but the difference stays within the noise floor" if t.get("exceeds_floor") is False else
                       " (no noise floor to compare with)")
            sentences.append(f"{name}: {larger}'s attributions are larger (p = {_p(t.get('p_value'))}){verdict}.")
        else:
            sentences.append(f"{name}: no significant difference (p = {_p(t.get('p_value'))}).")
    out.append("</tbody></table>")
    out.append("<ul class=\"verdicts\">" + "".join(f"<li>{esc(x)}</li>" for x in sentences) + "</ul>")
    return "\n".join(out)


AGREEMENT_SHOWN = ("spearman", "kendall", "jaccard5", "jaccard10", "sign5", "sign10", "feature5", "rank5",
                   "ksign5", "signed_rank5")


def _metric_label(m: str) -> str:
    try:
        from engine.compare import METRIC_LABELS
    except ImportError:  # pragma: no cover
        return m
    return METRIC_LABELS.get(m, m)


def agreement_html(cmp: dict[str, Any]) -> str:
    """Agreement per metric: the pair's mean [CI] next to the noise floor (reference vs itself)."""
    agr = cmp.get("agreement") or {}
    if not agr:
        return ""
    level = cmp.get("level", "word")
    out = ["<h3>Agreement with the noise floor</h3>",
           f"<p>Per-review agreement between the two explanations (mean over {cmp.get('n_reviews', '?')} reviews, "
           "95% bootstrap CI), next to the noise floor: the reference against its own re-explanation with "
           "another seed. A difference is real when the floor's agreement exceeds the pair's (gap CI above 0).</p>"]
    for lvl in [level] + sorted(k for k in agr if k != level):
        a = agr[lvl]
        mean, ci, floor = a.get("mean") or {}, a.get("ci") or {}, a.get("floor") or {}
        noise = a.get("noise_floor") or {}
        out.append(f"<h4>{esc(lvl)} level</h4><table><thead><tr><th>metric</th><th>pair</th><th>95% CI</th>"
                   "<th>noise floor</th><th>gap (floor − pair) [95% CI]</th><th>p</th><th>real difference</th>"
                   "</tr></thead><tbody>")
        for m in AGREEMENT_SHOWN:
            if m not in mean:
                continue
            f = floor.get(m) or {}
            lo, hi = (ci.get(m) or [None, None])[:2]
            out.append(f"<tr><td>{esc(_metric_label(m))}</td><td class=\"num\">{_fmt(mean.get(m))}</td>"
                       f"<td class=\"num\">{_ci(lo, hi)}</td><td class=\"num\">{_fmt(noise.get(m))}</td>"
                       f"<td class=\"num\">{_fmt(f.get('gap'))} {_ci(f.get('gap_ci_low'), f.get('gap_ci_high'))}</td>"
                       f"<td class=\"num\">{_p(f.get('p_value'))}</td><td>{_yn(f.get('real'))}</td></tr>")
        out.append("</tbody></table>")
        if lvl == level and a.get("splits"):
            parts = []
            for split, groups in a["splits"].items():
                g = "; ".join(f"{k} {_fmt((d or {}).get('spearman'))} (n={(d or {}).get('n')})" for k, d in groups.items())
                if g:
                    parts.append(f"<li>Spearman by {esc(split.replace('_', ' '))}: {esc(g)}</li>")
            if parts:
                out.append("<ul>" + "".join(parts) + "</ul>")
    return "\n".join(out)


def faithfulness_html(cmp: dict[str, Any]) -> str:
    faith = cmp.get("faithfulness")
    if not faith:
        return ""
    out = ["<h3>Faithfulness</h3>",
           "<p>ERASER comprehensiveness (higher: removing the top tokens changes the output more) and "
           "sufficiency (lower: the top tokens alone keep the output), AOPC over removal fractions.</p>",
           "<table><thead><tr><th>model</th><th>comprehensiveness [95% CI]</th><th>sufficiency [95% CI]</th>"
           "<th>n</th><th>removal</th></tr></thead><tbody>"]
    for name, f in faith.items():
        if not f:
            out.append(f"<tr><td>{esc(name)}</td><td colspan=\"4\">not computed</td></tr>")
            continue
        c, s = f.get("comprehensiveness") or {}, f.get("sufficiency") or {}
        out.append(f"<tr><td>{esc(name)}</td><td class=\"num\">{_fmt(c.get('mean'))} {_ci(c.get('ci_low'), c.get('ci_high'))}</td>"
                   f"<td class=\"num\">{_fmt(s.get('mean'))} {_ci(s.get('ci_low'), s.get('ci_high'))}</td>"
                   f"<td class=\"num\">{esc(_fmt(f.get('n')))}</td><td>{esc(_fmt(f.get('removal')))}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def pair_html(rp: ReportPair) -> str:
    p = rp.pair
    cmp = (rp.statistics or {}).get("comparison") or {}
    out = [f'<section class="pairsec" id="pair-{esc(p.folder)}"><h2>{esc(p.ref["name"])} (reference) vs '
           f'{esc(p.other["name"])}</h2>',
           f'<p class="files">Files for this pair: <code>{esc(p.folder)}/</code> (figures/, statistics.json, '
           f"metrics.csv, metrics.md, attributions.csv)</p>"]
    for n in rp.notes:
        out.append(f'<p class="note">{esc(n)}</p>')
    out.extend(x for x in (magnitude_html(cmp), agreement_html(cmp), faithfulness_html(cmp)) if x)
    if rp.figures:
        out.append("<h3>Figures</h3>")
        out.append('<div class="figures">' + "".join(figure_html(s, png) for s, png in rp.figures) + "</div>")
    if rp.reviews:
        scale = shared_scale(rp.reviews)
        out.append(f"<h3>The {len(rp.reviews)} reviews where the two models disagree most</h3>")
        out.append("<p>Prediction flips first, then by disagreement of the explanations "
                   "(1 − Spearman of the word attributions).</p>")
        out.append(legend(scale))
        out.extend(review_html(r, scale, i + 1) for i, r in enumerate(rp.reviews))
    if cmp:
        brief = {k: v for k, v in cmp.items() if k not in ("per_review", "distribution")}
        out.append("<details><summary>All summary statistics (statistics.json has the per-review rows too)"
                   "</summary>")
        out.append(statistics_html(brief))
        out.append("</details>")
    out.append("</section>")
    return "\n".join(out)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
 padding:0 1em;color:#1b1b1b;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .5em;vertical-align:top;
 text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.stats{font-size:.85em}table.stats th{background:#f6f6f6;font-weight:600}
.figures{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0;flex:1 1 520px;max-width:100%}
figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#444}
.review{margin:1em 0;border-top:1px solid #eee}.pair{display:flex;gap:1em}
.side{flex:1 1 0;min-width:0}.model{font-weight:600;margin-bottom:.3em}
.text{white-space:pre-wrap;overflow-wrap:anywhere;font-size:.95em;line-height:1.8}
.tok{border-radius:2px}.unexplained{color:#999}
.legend .tok{padding:0 .3em;font-size:.8em}.note{color:#8a4b00}dl.summary dt{font-weight:600}
dl.summary dd{margin:0 0 .6em 1em}code{background:#f3f3f3;padding:0 .2em}
"""


def render_report(experiment: str, metrics: Sequence[Any], pairs: Sequence[ReportPair],
                  notes: Sequence[str] = (), title: str | None = None) -> str:
    """The whole report as one HTML string (deterministic for the same inputs)."""
    title = title or f"shapdiff report: {experiment}"
    toc = "".join(f'<li><a href="#pair-{esc(p.pair.folder)}">{esc(p.pair.label)}</a></li>' for p in pairs)
    body = [f"<h1>{esc(title)}</h1>",
            "<p>How compressing a sentiment classifier changes its explanations: per-class metrics, the "
            "magnitude test, agreement between the models' SHAP attributions against the noise floor (the "
            "reference re-explained with another seed), faithfulness, the study's figures, and the reviews "
            "where the explanations disagree most, coloured token by token.</p>",
            f"<nav><ul>{toc}</ul></nav>",
            "<h2>Classification metrics</h2>", metrics_table(metrics)]
    body.extend(pair_html(p) for p in pairs)
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    body.append('<footer><p><small>Written by <code>shapdiff export</code>. Every figure is also a file next '
                "to this report; the numbers are in statistics.json and the CSV files.</small></p></footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
