"""Pure rendering helpers: engine data -> rich Text. No Textual, no markup strings.

Review text is data: it only ever enters a :class:`rich.text.Text` through ``append``
with a style object, never through markup parsing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.color import Color
from rich.style import Style
from rich.table import Table
from rich.text import Text

from engine.browse import CLASS_NAMES, ExplanationView, ModelPred, ReviewDetail, ReviewRow, Token, top_tokens

# Four steps per sign, from the xterm 256-colour palette (exact indexes, so a 256-colour
# terminal shows exactly these and neighbouring steps stay distinguishable).
POS_STEPS = (224, 217, 210, 160)       # reds: pushes towards "positive"
NEG_STEPS = (189, 153, 111, 26)        # blues: pushes towards "negative"
DARK = {160, 26}
THRESHOLDS = (0.08, 0.3, 0.55, 0.8)    # |v| / scale at which step 1..4 begins

POS_GLYPH = "⁺"
NEG_GLYPH = "⁻"


def step(value: float, scale: float) -> int:
    """Signed colour step of ``value`` on a scale bounded by ``scale``: -4..4 (0 = neutral)."""
    if scale <= 0 or not math.isfinite(value):
        return 0
    r = min(1.0, abs(value) / scale)
    k = sum(1 for t in THRESHOLDS if r >= t)
    return k if value > 0 else -k


def step_style(k: int) -> Style:
    """The style of a signed step. Positive is underlined and negative italic, so the sign
    stays readable where colour is not shown (NO_COLOR, monochrome terminals)."""
    if k == 0:
        return Style()
    idx = (POS_STEPS if k > 0 else NEG_STEPS)[abs(k) - 1]
    fg = Color.from_ansi(15 if idx in DARK else 16)
    return Style(bgcolor=Color.from_ansi(idx), color=fg, underline=k > 0, italic=k < 0, bold=abs(k) == 4)


def fmt(v: float | None, digits: int = 2, sign: bool = True) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def legend(scale: float, glyphs: bool = False) -> Text:
    """The shared colour scale: negative steps, neutral, positive steps, with bounds."""
    t = Text(no_wrap=True, end="")
    t.append("scale ", style="bold")
    t.append(f"{-scale:+.2f} ")
    for k in (-4, -3, -2, -1):
        t.append(f" {NEG_GLYPH if glyphs else ' '} ", style=step_style(k))
    t.append(" 0 ")
    for k in (1, 2, 3, 4):
        t.append(f" {POS_GLYPH if glyphs else ' '} ", style=step_style(k))
    t.append(f" {scale:+.2f}")
    t.append("   ")
    t.append("positive", style=Style(underline=True))
    t.append(" (towards positive) underlined, ")
    t.append("negative", style=Style(italic=True))
    t.append(" italic; both models on this one scale", style="dim")
    return t


def review_text(text: str, tokens: Sequence[Token], scale: float, *, glyphs: bool = False,
                truncated: bool = False) -> Text:
    """The review's characters with each explained token coloured by its value.

    Characters between tokens are kept as they are; what a truncated explanation's model
    never saw (past the last token, or the middle that head+tail truncation cuts out) is
    dimmed behind a marker.
    """
    out = Text(end="")
    pos = 0
    for t in sorted(tokens, key=lambda t: (t.start, t.end)):
        if t.start < pos or t.end <= t.start:
            continue
        gap = text[pos:t.start]
        if truncated and gap.strip() and pos > 0:
            out.append(" ✂ cut: the model did not see this part ", style=Style(reverse=True, bold=True))
            out.append(gap, style=Style(dim=True))
            out.append(" ✂ ", style=Style(reverse=True, bold=True))
        elif gap:
            out.append(gap)
        k = step(t.value, scale)
        out.append(text[t.start:t.end], style=step_style(k))
        if glyphs and k:
            out.append(POS_GLYPH if k > 0 else NEG_GLYPH, style=Style(bold=abs(k) >= 3))
        pos = t.end
    rest = text[pos:]
    if truncated and rest.strip():
        out.append(" ✂ truncated: the model saw no further ", style=Style(reverse=True, bold=True))
        out.append(rest, style=Style(dim=True))
    elif rest:
        out.append(rest)
    return out


def prediction(p: ModelPred | None, label: int | None = None) -> Text:
    if p is None:
        return Text("not predicted", style="dim", end="")
    t = Text(end="")
    t.append(f"{CLASS_NAMES[p.pred]} ")
    t.append(f"p(pos)={p.p_pos:.3f}")
    if label is not None:
        t.append(" ✓" if p.pred == label else " ✗", style="bold" if p.pred != label else "")
    return t


def explanation_header(name: str, role: str, p: ModelPred | None, label: int,
                       ex: ExplanationView | None, n_shown: int) -> Text:
    t = Text(end="")
    t.append(name, style="bold")
    t.append(f"  ({role})\n", style="dim")
    t.append("prediction ")
    t.append_text(prediction(p, label))
    t.append("\n")
    if ex is None:
        t.append("no explanation stored for this review (press r to compute)", style="italic")
        return t
    t.append(f"base {ex.base_value:+.3f}  f(x) {ex.fx:+.3f}  ({ex.output})")
    if ex.additivity_error > 1e-3:
        t.append(f"  additivity error {ex.additivity_error:.3g}", style="bold")
    t.append("\n")
    t.append(f"{n_shown} units shown, {ex.n_tokens} tokens explained", style="dim")
    if ex.truncated:
        t.append("  ✂ truncated", style=Style(bold=True, reverse=True))
    if ex.warning:
        t.append("\n")
        t.append(f"warning: {ex.warning}", style="italic")
    return t


def _tok_cell(tok: Token | None, scale: float, glyphs: bool, w: int) -> Text:
    t = Text(end="")
    if tok is None:
        t.append(" " * w)
        return t
    kk = step(tok.value, scale)
    val = f"{tok.value:+.3f} "
    word = (" ".join(tok.text.split()) or "␣")[: max(1, w - len(val) - 1)]
    t.append(val)
    t.append(word, style=step_style(kk))
    if glyphs and kk:
        t.append(POS_GLYPH if kk > 0 else NEG_GLYPH)
    t.append(" " * max(0, w - t.cell_len))
    return t


def top_table(tokens: Sequence[Token], scale: float, k: int = 5, glyphs: bool = False, width: int = 22) -> Text:
    """The review's top tokens of one model: most negative and most positive, with values."""
    pos, neg = top_tokens(tokens, k)
    t = Text(end="")
    t.append("top ", style="bold")
    t.append("→ negative".ljust(max(1, width - 4)), style="dim")
    t.append("→ positive", style="dim")
    for i in range(max(len(pos), len(neg), 1)):
        t.append("\n")
        t.append_text(_tok_cell(neg[i] if i < len(neg) else None, scale, glyphs, width))
        t.append_text(_tok_cell(pos[i] if i < len(pos) else None, scale, glyphs, width))
    return t


def review_summary(detail: ReviewDetail, models: Sequence[tuple[str, str]]) -> Text:
    """One line per model: its prediction of this review (every model of the experiment)."""
    t = Text(end="")
    t.append(f"{detail.id}", style="bold")
    t.append(f"  label {CLASS_NAMES[detail.label]}  {len(detail.text)} chars\n")
    for i, (name, role) in enumerate(models):
        if i:
            t.append("   ")
        p = detail.preds.get(name)
        t.append(f"{name}{'*' if role == 'reference' else ''} ")
        if p is None:
            t.append("–", style="dim")
        else:
            t.append(f"{'+' if p.pred else '−'}{p.confidence:.2f}{'✗' if p.pred != detail.label else ''}",
                     style="bold" if p.pred != detail.label else "")
    return t


# -- review list rows --------------------------------------------------------------------------

def list_columns(width: int, n_models: int) -> dict[str, int]:
    return {"rank": 6, "label": 4, "ref": 8, "other": 8, "flip": 2, "score": 6, "len": 6,
            "all": max(3, n_models + 1), "ex": 2}


def list_header(ref: str, other: str, n_models: int, width: int, sort: str) -> Text:
    c = list_columns(width, n_models)
    t = Text(no_wrap=True, end="", style="bold")
    mark = {"disagreement": "score", "confidence_gap": "score", "length": "len"}.get(sort, "")
    t.append("#".rjust(c["rank"] - 1) + " ")
    t.append("lab".ljust(c["label"]))
    t.append(ref[:c["ref"] - 1].ljust(c["ref"]))
    t.append(other[:c["other"] - 1].ljust(c["other"]))
    t.append("≠ ")
    t.append(("score" + ("▾" if mark == "score" else "")).ljust(c["score"]))
    t.append(("len" + ("▾" if mark == "len" else "")).rjust(c["len"] - 1) + " ")
    t.append("all".ljust(c["all"]))
    t.append("E ")
    t.append("text")
    return t


def _pcell(p: ModelPred | None, label: int, w: int) -> Text:
    if p is None:
        return Text("–".ljust(w), end="")
    wrong = p.pred != label
    s = f"{'+' if p.pred else '−'}{p.confidence:.2f}{'✗' if wrong else ' '}"
    return Text(s.ljust(w), style="bold" if wrong else "", end="")


def list_row(rank: int, row: ReviewRow, width: int, model_names: Sequence[str], score: float | None) -> Text:
    """One line of the review list. The snippet is appended as data (never markup)."""
    c = list_columns(width, len(model_names))
    t = Text(no_wrap=True, overflow="ellipsis", end="")
    t.append(f"{rank:>{c['rank'] - 1}} ")
    t.append(("pos" if row.label else "neg").ljust(c["label"]))
    t.append_text(_pcell(row.ref_pred, row.label, c["ref"]))
    t.append_text(_pcell(row.other_pred, row.label, c["other"]))
    t.append("≠ " if row.flip else "  ", style="bold reverse" if row.flip else "")
    t.append((f"{score:.3f}" if score is not None else "–").ljust(c["score"]))
    t.append(f"{row.n_chars:>{c['len'] - 1}} ")
    allp = "".join("+" if (p := row.preds.get(n)) and p.pred else "−" if p else "·" for n in model_names)
    t.append(allp.ljust(c["all"]))
    t.append("● " if row.explained else "  ")
    used = sum(c.values())
    if width > used:
        t.append(row.snippet[: width - used])
    return t


# -- metrics ----------------------------------------------------------------------------------

def metrics_table(rows) -> Table:
    """The study's Table 1 for every model (engine.metrics.ModelMetrics rows); fits 80 columns."""
    from rich import box

    table = Table(title="Per-model, per-class metrics (Table 1)", title_justify="left", expand=False,
                  box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, padding=(0, 1))
    for col, just in (("model", "left"), ("class", "left"), ("precision", "right"), ("recall", "right"),
                      ("F1", "right"), ("support", "right"), ("accuracy", "right"), ("confusion", "right")):
        col = {"precision": "prec", "recall": "rec", "support": "supp", "accuracy": "acc",
               "confusion": "confusion"}.get(col, col)
        table.add_column(col, justify=just, no_wrap=True, min_width=2)
    for m in rows:
        (tn, fp), (fn, tp) = m.confusion
        conf = [f"{tn} {fp}", f"{fn} {tp}"]
        for i, c in enumerate(m.classes):
            name = Text(m.name + (" *" if m.role == "reference" else ""), style="bold") if i == 0 else Text("")
            acc = f"{m.accuracy:.3f}" if i == 0 else f"n={m.n}"
            table.add_row(name, c.label[:3], f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}",
                          str(c.support), acc, conf[i], end_section=i == 1)
    table.caption = ("* reference model; prec = precision, rec = recall, supp = support, acc = accuracy "
                     "over n reviews with a stored prediction; confusion: rows true neg/pos, columns predicted "
                     "neg/pos")
    table.caption_justify = "left"
    return table


def _get(obj, *names, default=None):
    for n in names:
        if isinstance(obj, dict) and n in obj:
            return obj[n]
        if hasattr(obj, n):
            return getattr(obj, n)
    return default


def pair_label(ref: str, other: str) -> str:
    """``"A vs B"``; a workspace with one model so far has no pair to name."""
    return f"{ref} vs {other}" if ref != other else f"{ref} (the only model so far: no pair yet)"


def pair_report_text(report, ref: str, other: str) -> Text:
    """Human lines for an engine.compare PairReport (read defensively: fields by name)."""
    t = Text(end="")
    t.append(f"{pair_label(ref, other)}\n", style="bold")
    if report is None:
        t.append("comparison not computed yet (needs explanations of both models)", style="italic")
        return t
    to_text = _get(report, "summary_lines", "lines")
    if callable(to_text):
        for line in to_text():
            t.append(str(line) + "\n")
        return t
    d = report.to_dict() if hasattr(report, "to_dict") else (report if isinstance(report, dict) else vars(report))
    for key, value in d.items():
        t.append(f"{key}: ", style="bold")
        t.append(_short(value) + "\n")
    return t


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_short(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        if len(v) > 8:
            return f"[{len(v)} values]"
        return ", ".join(_short(x) for x in v)
    return str(v)
