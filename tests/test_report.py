"""report.html: self-contained, holds the figures and the reviews, escapes review text."""

from __future__ import annotations

import base64
import html
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from engine.demo import build_demo_workspace
from engine.export import Pair, export_experiment
from engine.figures import FigureSpec, Series, render_matplotlib
from engine.report import ReportPair, ReviewView, Side, coloured_text, render_report, shared_scale, token_colour
from engine.store import open_store

HOSTILE = 'Great <script>alert("x")</script> film & [red]bold[/] <img src=x onerror=alert(1)> "end"'


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _tokens(text: str, values: list[float]) -> tuple[dict, ...]:
    spans = [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]
    toks = [{"position": 0, "token": "[CLS]", "start": 0, "end": 0, "value": 0.0, "special": 1}]
    toks += [{"position": i + 1, "token": text[a:b], "start": a, "end": b, "value": values[i % len(values)],
              "special": 0} for i, (a, b) in enumerate(spans)]
    return tuple(toks)


def _report(text: str = HOSTILE, figures: bool = True) -> str:
    pair = Pair({"name": "teach<er>", "id": "a"}, {"name": "stu&dent", "id": "b"})
    review = ReviewView("r:1", text, 1, (Side("teach<er>", _tokens(text, [0.5, -0.25]), 0.9, 1),
                                         Side("stu&dent", _tokens(text, [1.0, -0.1]), 0.4, 0)), 0.7)
    figs = []
    if figures:
        import io

        spec = FigureSpec("top_features-teacher", "barh", "Top features <teacher>", "mean |SHAP|", "feature",
                          (Series("teacher", (0.5, 0.2), ("great", "<b>")),), note="n = 12")
        buf = io.BytesIO()
        render_matplotlib(spec).savefig(buf, format="png", metadata={"Software": None})
        figs.append((spec, buf.getvalue()))
    stats = {"comparison": {"ref": "teach<er>", "other": "stu&dent", "level": "word", "n_reviews": 1,
                            "magnitude": {"raw": {"n": 1, "mean_ref": 0.1, "mean_other": 0.2, "larger": "other",
                                                  "p_value": 0.01, "exceeds_floor": True, "real": True}},
                            "agreement": {"word": {"mean": {"spearman": 0.5}, "ci": {"spearman": [0.4, 0.6]},
                                                   "noise_floor": {"spearman": 0.9},
                                                   "floor": {"spearman": {"gap": 0.4, "real": True}}}}}}
    rp = ReportPair(pair, stats, figs, [review], ["note <i>"])
    return render_report("demo<x>", [], [rp])


def test_review_text_is_escaped_never_markup() -> None:
    page = _report()
    assert "<script" not in page.lower()
    assert "onerror=alert" not in page.replace("onerror=alert(1)&gt;", "")   # only as escaped text
    assert "<img src=x" not in page
    assert HOSTILE in html.unescape(re.sub(r"<[^>]+>", "", page))     # shown as text, whole
    assert "teach&lt;er&gt;" in page and "stu&amp;dent" in page and "<er>" not in page
    p = _Collect()
    p.feed(page)
    assert {t for t, _ in p.tags} <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "h4", "p",
                                      "nav", "ul", "li", "a", "section", "code", "small", "span", "div", "figure",
                                      "img", "figcaption", "br", "table", "thead", "tbody", "tr", "th", "td",
                                      "details", "summary", "footer", "em", "dl", "dt", "dd", "ol"}
    imgs = [a for t, a in p.tags if t == "img"]
    assert imgs and all(a["src"].startswith("data:image/png;base64,") for a in imgs)
    assert all(a.get("href", "#").startswith("#") for t, a in p.tags if t == "a")   # nothing fetched
    csp = [a for t, a in p.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]["content"]


def test_coloured_text_keeps_every_character_and_shares_the_scale() -> None:
    toks = _tokens(HOSTILE, [0.5, -0.25])
    out = coloured_text(HOSTILE, toks, 1.0)
    p = _Collect()
    p.feed(out)
    p.close()
    assert "".join(p.text) == HOSTILE
    spans = [a for t, a in p.tags if t == "span"]
    assert len(spans) == sum(1 for t in toks if not t["special"])
    # one scale for both sides: the same value gets the same colour on either side
    r = ReviewView("r", "a b", 0, (Side("x", _tokens("a b", [0.5])), Side("y", _tokens("a b", [2.0]))))
    assert shared_scale([r]) == 2.0
    assert token_colour(0.5, 2.0) == "rgba(214,39,40,0.212)"
    assert token_colour(-2.0, 2.0) == "rgba(31,119,180,0.850)"


def test_coloured_text_truncated_and_offsetless_tokens() -> None:
    text = "good movie but a very long tail"
    toks = _tokens(text, [1.0])[:3]      # only the first two words explained
    out = coloured_text(text, toks, 1.0)
    assert 'class="unexplained"' in out and "a very long tail" in out
    bare = [{"position": 1, "token": "<hi>", "start": 0, "end": 0, "value": 0.3, "special": 0}]
    assert "&lt;hi&gt;" in coloured_text("x", bare, 1.0)


def test_report_is_deterministic() -> None:
    assert _report() == _report()


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> tuple[str, list[str]]:
    ws = tmp_path_factory.mktemp("ws")
    build_demo_workspace(ws, n_reviews=30, n_explained=12)
    with open_store(ws / "shapdiff.db") as store:
        # a review holding markup: review text is data, never trusted
        store.conn.execute("UPDATE reviews SET text = text || ' <script>alert(1)</script><b>x'")
        store.conn.commit()
        out = tmp_path_factory.mktemp("out")
        summary = export_experiment(store, out, formats="svg", other="student")
    figures = [f for f in summary.files if f.endswith(".svg")]
    return (out / "report.html").read_text(encoding="utf-8"), figures


def test_exported_report_holds_figures_and_reviews(report_html) -> None:
    page, figures = report_html
    assert "<script" not in page and "<b>x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;x" in page
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == len(figures), "every exported figure is inlined in the report"
    for b in imgs:
        assert base64.b64decode(b).startswith(b"\x89PNG")
    assert "teacher (reference) vs student" in page and "teacher-int8</h2>" not in page
    # the ten most-disagreeing reviews, each side by side with both models
    sections = re.findall(r'<section class="review">', page)
    assert len(sections) == 10
    assert page.count('class="side"') == 2 * len(sections)
    assert "Classification metrics" in page and "student" in page
    if "Magnitude test" in page:     # engine.compare available
        assert "Agreement with the noise floor" in page and "noise floor" in page
