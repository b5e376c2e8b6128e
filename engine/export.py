"""Exports: the study's figures and tables as files that stand on their own.

``export_experiment`` writes, for every reference/compressed pair of an experiment, the
figures (through :mod:`engine.figures`, one code path with the TUI's ``e`` key), the
metrics table (CSV and Markdown), the statistics (JSON), the attributions (CSV, one row
per review, model and token) and one self-contained ``report.html``.

Exports are deterministic (the same workspace gives byte-identical files: no dates, fixed
ids, sorted keys) and never replace a different earlier export silently: everything is
first written into a staging folder next to the destination, compared with what is
there, and only then moved into place (or refused without ``force``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import BadInput, ShapdiffError
from engine.figures import FORMATS, FigureSpec, safe_stem, save_figure
from engine.progress import NEVER, CancelToken, Progress, ProgressCallback, no_progress
from engine.store import Store

MANIFEST = "shapdiff-export.json"
REPORT = "report.html"
EXPORT_FORMAT_VERSION = 1
TOP_REVIEWS = 10

METRICS_COLUMNS = ("model", "role", "model_id", "class", "precision", "recall", "f1", "support",
                   "accuracy", "n", "truncated", "tn", "fp", "fn", "tp")
ATTRIBUTION_COLUMNS = ("review_id", "model", "model_id", "settings_hash", "position", "token",
                       "start", "end", "value", "special")


# -- figures: the one code path shared with the TUI -------------------------------------

def export_figures(specs: Iterable[FigureSpec], folder: str | Path,
                   formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write every spec into ``folder`` as KEY.FORMAT (deterministic files); returns the paths.

    The TUI's ``e`` key and ``shapdiff export`` both call this. File names come from
    :func:`engine.figures.safe_stem`, so a model name cannot place a file outside ``folder``.
    """
    formats = parse_formats(formats)
    folder = Path(folder)
    out: list[Path] = []
    for spec in specs:
        out.extend(save_figure(spec, folder, formats))
    return out


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """``"png,svg"`` or a sequence -> a validated tuple without repeats, in the given order."""
    items = [f.strip().lower().lstrip(".") for f in (formats.split(",") if isinstance(formats, str) else formats)]
    items = [f for f in items if f]
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise BadInput(f"unknown figure format {', '.join(map(repr, bad)) or '(none given)'}",
                       f"use a comma-separated list of {', '.join(FORMATS)}, e.g. --format png,svg")
    return tuple(dict.fromkeys(items))


# -- tables ---------------------------------------------------------------------------------

def _num(v: Any) -> Any:
    """A value for CSV/JSON: floats as their shortest repr, NaN/inf as empty (None)."""
    if isinstance(v, float):
        return None if math.isnan(v) or math.isinf(v) else v
    return v


def metrics_rows(metrics: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per model and class (the study's Table 1), as plain dicts."""
    rows = []
    for m in metrics:
        (tn, fp), (fn, tp) = m.confusion
        for c in m.classes:
            rows.append({"model": m.name, "role": m.role, "model_id": m.model_id, "class": c.label,
                         "precision": c.precision, "recall": c.recall, "f1": c.f1, "support": c.support,
                         "accuracy": m.accuracy, "n": m.n, "truncated": m.truncated,
                         "tn": tn, "fp": fp, "fn": fn, "tp": tp})
    return rows


def csv_text(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if _num(r.get(k)) is None else _num(r.get(k))) for k in columns})
    return buf.getvalue()


def metrics_csv(metrics: Sequence[Any]) -> str:
    return csv_text(metrics_rows(metrics), METRICS_COLUMNS)


def _md_cell(v: Any) -> str:
    text = f"{v:.3f}" if isinstance(v, float) else str(v)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def metrics_markdown(metrics: Sequence[Any], experiment: str) -> str:
    """The metrics table as GitHub-flavoured Markdown."""
    lines = [f"# Classification metrics: experiment `{_md_cell(experiment)}`", "",
             "| model | role | class | precision | recall | F1 | support | accuracy | n |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for m in metrics:
        for i, c in enumerate(m.classes):
            first = i == 0
            lines.append("| " + " | ".join(_md_cell(x) for x in (
                m.name if first else "", m.role if first else "", c.label, c.precision, c.recall, c.f1,
                c.support, m.accuracy if first else "", m.n if first else "")) + " |")
    lines.append("")
    for m in metrics:
        (tn, fp), (fn, tp) = m.confusion
        extra = f"; {m.truncated} truncated reviews" if m.truncated else ""
        lines.append(f"- `{_md_cell(m.name)}` confusion: TN {tn}, FP {fp}, FN {fn}, TP {tp}{extra}")
    return "\n".join(lines) + "\n"


def json_text(obj: Any) -> str:
    """Deterministic, strictly valid JSON (NaN and infinities become null)."""
    return json.dumps(_clean(obj), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return _num(obj)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if hasattr(obj, "to_dict"):
        return _clean(obj.to_dict())
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):   # numpy scalars
        return _clean(obj.item())
    return obj


# -- what an experiment holds -----------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    ref: dict[str, Any]       # experiment_models rows
    other: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.ref['name']} vs {self.other['name']}"

    @property
    def folder(self) -> str:
        return safe_stem(f"{self.ref['name']}-vs-{self.other['name']}")


def experiment_pairs(store: Store, experiment: str, ref: str | None = None,
                     other: str | None = None) -> list[Pair]:
    """The reference/compressed pairs of an experiment (narrowed by ``ref``/``other``)."""
    models = store.experiment_models(experiment)
    by_name = {m["name"]: m for m in models}
    for given, flag in ((ref, "--ref"), (other, "--other")):
        if given is not None and given not in by_name:
            raise BadInput(f"no model named {given!r} in experiment {experiment!r}",
                           f"{flag} takes one of: {', '.join(by_name) or '(none)'}")
    refs = [by_name[ref]] if ref else [m for m in models if m["role"] == "reference"]
    if not refs:
        raise BadInput(f"experiment {experiment!r} has no reference model", "pass --ref MODEL")
    pairs = []
    for r in refs:
        others = [by_name[other]] if other else [m for m in models if m["name"] != r["name"]
                                                  and m["role"] != "reference"]
        pairs.extend(Pair(r, o) for o in others if o["name"] != r["name"])
    if not pairs:
        raise BadInput(f"nothing to compare in experiment {experiment!r}",
                       "an export needs two different models: check --ref and --other")
    return pairs


def main_explain_hash(store: Store, experiment: str, model_id: str) -> str | None:
    """The settings hash of the experiment's main explanations of ``model_id``.

    That is the preset's explainer settings; the reference's noise-floor re-explanation
    (another seed) is never taken for the main one. When the preset's hash has no rows
    (older code), the most frequent hash of this model's explanations is used.
    """
    from engine.config import parse_preset
    from engine.jobs import explain_hash

    row = next((e for e in store.experiments() if e["name"] == experiment), None)
    noise = None
    if row is not None:
        try:
            preset = parse_preset(json.loads(row["preset"]), experiment)
            expected = explain_hash(preset)
            if preset.explain.noise_seed is not None:
                noise = explain_hash(preset, preset.explain.noise_seed)
        except (ValueError, ShapdiffError):
            expected = None
        if expected and store.conn.execute(
                "SELECT 1 FROM explanations WHERE model_id = ? AND settings_hash = ? LIMIT 1",
                [model_id, expected]).fetchone():
            return expected
    rows = store.conn.execute(
        "SELECT settings_hash, COUNT(*) AS n FROM explanations WHERE model_id = ? GROUP BY settings_hash"
        " ORDER BY n DESC, settings_hash", [model_id]).fetchall()
    rows = [r for r in rows if r[0] != noise] or rows
    return rows[0][0] if rows else None


def attribution_rows(store: Store, experiment: str, models: Sequence[dict[str, Any]],
                     review_ids: Sequence[str] | None = None) -> Iterable[dict[str, Any]]:
    """One row per review, model and token of the main explanations, in sample order."""
    ids = list(review_ids) if review_ids is not None else store.sample_ids(experiment, "explain")
    for m in models:
        shash = main_explain_hash(store, experiment, m["id"])
        if shash is None:
            continue
        for rid in ids:
            expl = store.explanation(m["id"], rid, shash)
            if expl is None:
                continue
            for t in expl["tokens"]:
                yield {"review_id": rid, "model": m["name"], "model_id": m["id"], "settings_hash": shash,
                       **{k: t[k] for k in ("position", "token", "start", "end", "value", "special")}}


def attributions_csv(store: Store, experiment: str, models: Sequence[dict[str, Any]]) -> str:
    return csv_text(attribution_rows(store, experiment, models), ATTRIBUTION_COLUMNS)


# -- the export -------------------------------------------------------------------------------

@dataclass
class ExportSummary:
    out: Path
    experiment: str
    pairs: list[str]
    files: list[str]                        # relative paths, sorted
    status: str = "written"                 # written | unchanged | replaced
    formats: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "experiment": self.experiment, "pairs": self.pairs,
                "files": self.files, "status": self.status, "formats": list(self.formats),
                "notes": self.notes}


class _Stage:
    """A staging folder: every file of the export is written here first."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, rel: str) -> Path:
        p = (self.root / rel).resolve()
        if not p.is_relative_to(self.root.resolve()):   # names come from safe_stem; belt and braces
            raise ShapdiffError(f"refusing to write {rel!r} outside the export folder")
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_text(self, rel: str, text: str) -> None:
        self.path(rel).write_bytes(text.encode("utf-8"))

    def files(self) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())


def export_experiment(store: Store, out: str | Path, *, experiment: str | None = None,
                      formats: str | Sequence[str] = ("png", "svg"), ref: str | None = None,
                      other: str | None = None, force: bool = False,
                      on_progress: ProgressCallback = no_progress,
                      cancel: CancelToken = NEVER) -> ExportSummary:
    """Write the experiment's export into ``out``; see the module docstring.

    Raises :class:`BadInput` when ``out`` holds a different earlier export (or other
    files) and ``force`` is not set; nothing in ``out`` is changed then.
    """
    from engine.jobs import require_experiment

    formats = parse_formats(formats)
    experiment = require_experiment(store, experiment)
    pairs = experiment_pairs(store, experiment, ref, other)
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} exists and is not a folder", "choose a folder for --out")
    if not force and out.is_dir() and _read_manifest(out) is None and any(out.iterdir()):
        raise BadInput(f"{out} already holds files that are not a shapdiff export",
                       "choose a new or empty --out folder, or pass --force to write into it anyway")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage_root = Path(tempfile.mkdtemp(prefix=".shapdiff-export-", dir=out.parent))
    except OSError as exc:
        raise BadInput(f"cannot write next to {out}: {exc.strerror or exc}",
                       "choose a writable folder for --out") from exc
    try:
        stage = _Stage(stage_root)
        notes = _build(store, experiment, pairs, formats, stage, on_progress, cancel)
        files = stage.files()
        manifest = {"shapdiff_export": EXPORT_FORMAT_VERSION, "experiment": experiment,
                    "formats": list(formats), "pairs": [p.label for p in pairs],
                    "files": {rel: _sha256(stage.root / rel) for rel in files}}
        stage.write_text(MANIFEST, json_text(manifest))
        files = stage.files()
        status = _commit(stage.root, out, files, force)
    except OSError as exc:
        raise ShapdiffError(f"the export to {out} failed: {exc.strerror or exc}",
                            "check the disk space and permissions of --out; run the export again "
                            "(with --force if part of it was written)") from exc
    finally:
        shutil.rmtree(stage_root, ignore_errors=True)
    on_progress(Progress("export", f"export {status}: {len(files)} files in {out}", 1, 1, "commit"))
    return ExportSummary(out, experiment, [p.label for p in pairs], files, status, formats, notes)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _commit(stage: Path, out: Path, files: list[str], force: bool) -> str:
    """Move the staged files into ``out`` unless that would silently replace something else."""
    existing = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) if out.is_dir() else []
    if not existing:
        status = "written"
    else:
        old_manifest = _read_manifest(out)
        same = set(existing) == set(files) and all(
            (out / rel).read_bytes() == (stage / rel).read_bytes() for rel in files)
        if same:
            return "unchanged"
        if not force:
            if old_manifest is None:
                what = f"{out} already holds {len(existing)} files that are not a shapdiff export"
            else:
                changed = sorted(r for r in set(files) | set(existing)
                                 if not ((out / r).is_file() and (stage / r).is_file()
                                         and (out / r).read_bytes() == (stage / r).read_bytes()))
                what = (f"{out} holds a different earlier export ({len(changed)} files differ, "
                        f"e.g. {changed[0]})")
            raise BadInput(what, "choose a new --out folder, or pass --force to replace it")
        status = "replaced"
        # Remove files of the earlier export that this one no longer has (only those the
        # earlier manifest lists: files someone else put there are left alone).
        if old_manifest is not None:
            for rel in old_manifest.get("files", {}):
                p = (out / rel).resolve()
                if rel not in files and p.is_relative_to(out) and p.is_file():
                    p.unlink()
    for rel in files:
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / rel, dest)
    return status


def _read_manifest(out: Path) -> dict | None:
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "shapdiff_export" in data else None


def _build(store: Store, experiment: str, pairs: list[Pair], formats: tuple[str, ...], stage: _Stage,
           on_progress: ProgressCallback, cancel: CancelToken) -> list[str]:
    from engine.metrics import experiment_metrics
    from engine.report import ReportPair, render_report

    notes: list[str] = []
    total = len(pairs) + 2
    step = 0

    def tick(message: str) -> None:
        nonlocal step
        cancel.check()
        on_progress(Progress("export", message, step, total, "export"))
        step += 1

    tick("metrics tables")
    metrics = experiment_metrics(store, experiment)
    stage.write_text("metrics.csv", metrics_csv(metrics))
    stage.write_text("metrics.md", metrics_markdown(metrics, experiment))
    report_pairs: list[ReportPair] = []
    for pair in pairs:
        tick(f"{pair.label}: figures, statistics, attributions")
        report_pairs.append(_export_pair(store, experiment, pair, metrics, formats, stage, notes))
    tick("report.html")
    stage.write_text(REPORT, render_report(experiment, metrics, report_pairs, notes))
    on_progress(Progress("export", "export staged", total, total, "export"))
    return notes


def _export_pair(store: Store, experiment: str, pair: Pair, metrics: Sequence[Any], formats: tuple[str, ...],
                 stage: _Stage, notes: list[str]):
    from engine.report import ReportPair

    d = pair.folder
    pair_metrics = [m for m in metrics if m.name in (pair.ref["name"], pair.other["name"])]
    stage.write_text(f"{d}/metrics.csv", metrics_csv(pair_metrics))
    stage.write_text(f"{d}/metrics.md", metrics_markdown(pair_metrics, f"{experiment}: {pair.label}"))
    stage.write_text(f"{d}/attributions.csv", attributions_csv(store, experiment, [pair.ref, pair.other]))

    result = analyse_pair(store, experiment, pair, top_reviews=TOP_REVIEWS)
    notes.extend(f"{pair.label}: {n}" for n in result.notes)
    stats = {"experiment": experiment, "reference": pair.ref["name"], "other": pair.other["name"],
             "metrics": [m.to_dict() for m in pair_metrics], "comparison": result.statistics}
    stage.write_text(f"{d}/statistics.json", json_text(stats))

    fig_dir = stage.path(f"{d}/figures/.keep").parent
    # The report inlines every figure as PNG, so PNG is drawn even when it is not exported.
    export_figures(result.figures, fig_dir, tuple(dict.fromkeys(formats + ("png",))))
    pngs: dict[str, bytes] = {}
    for spec in result.figures:
        png = fig_dir / f"{safe_stem(spec.key)}.png"
        pngs[spec.key] = png.read_bytes()
        if "png" not in formats:
            png.unlink()
    return ReportPair(pair=pair, statistics=stats, figures=[(s, pngs[s.key]) for s in result.figures],
                      reviews=result.reviews, notes=result.notes)


# -- one pair's analysis: statistics, figures, the most-disagreeing reviews -------------------

@dataclass
class PairAnalysis:
    statistics: dict[str, Any]
    figures: list[FigureSpec]
    reviews: list[Any]                          # engine.report.ReviewView, most disagreeing first
    notes: list[str] = field(default_factory=list)


def _predictions(store: Store, model_id: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    return {p["review_id"]: p for p in store.predictions(model_id, ids)}


def review_views(store: Store, experiment: str, pair: Pair, ranked: Sequence[tuple[str, float | None]]) -> list[Any]:
    """Side-by-side views (text, both models' tokens and predictions) of ranked reviews."""
    from engine.report import ReviewView, Side

    ids = [rid for rid, _ in ranked]
    reviews = store.reviews(ids)
    hashes = {m["name"]: main_explain_hash(store, experiment, m["id"]) for m in (pair.ref, pair.other)}
    preds = {m["name"]: _predictions(store, m["id"], ids) for m in (pair.ref, pair.other)}
    out = []
    for rid, score in ranked:
        r = reviews.get(rid)
        if r is None:
            continue
        sides = []
        for m in (pair.ref, pair.other):
            expl = store.explanation(m["id"], rid, hashes[m["name"]]) if hashes[m["name"]] else None
            p = preds[m["name"]].get(rid)
            sides.append(Side(m["name"], tuple(expl["tokens"]) if expl else (),
                              float(p["p_pos"]) if p else None, int(p["pred"]) if p else None))
        out.append(ReviewView(rid, r["text"], r.get("label"), tuple(sides), score))
    return out


def _fallback_ranking(store: Store, experiment: str, pair: Pair) -> list[tuple[str, float | None]]:
    """Reviews explained by both models, by word-level disagreement 1 - cosine similarity."""
    from engine.words import explanation_words

    ids = store.sample_ids(experiment, "explain")
    reviews = store.reviews(ids)
    hashes = [main_explain_hash(store, experiment, m["id"]) for m in (pair.ref, pair.other)]
    scored = []
    for rid in ids:
        ex = [store.explanation(m["id"], rid, h) if h else None for m, h in zip((pair.ref, pair.other), hashes)]
        if None in ex or rid not in reviews:
            continue
        text = reviews[rid]["text"]
        a, b = ({f.span: f.value for f in explanation_words(e["tokens"], text)} for e in ex)
        common = sorted(set(a) & set(b))
        if len(common) < 2:
            continue
        dot = sum(a[k] * b[k] for k in common)
        na = math.sqrt(sum(a[k] ** 2 for k in common))
        nb = math.sqrt(sum(b[k] ** 2 for k in common))
        if na == 0 or nb == 0:
            continue
        scored.append((rid, round(1.0 - dot / (na * nb), 12)))
    scored.sort(key=lambda x: (-x[1], x[0]))
    return scored


def analyse_pair(store: Store, experiment: str, pair: Pair, *, top_reviews: int = TOP_REVIEWS) -> PairAnalysis:
    """Everything the export shows about one pair: engine.compare's statistics, the study's
    figures (engine.figures builders) and the most-disagreeing reviews (compare.triage order)."""
    try:
        from engine import compare

        rep = compare.pair_report(store, experiment, pair.ref["name"], pair.other["name"], level="word")
    except ImportError as exc:
        ranked = _fallback_ranking(store, experiment, pair)[:top_reviews]
        return PairAnalysis({}, [], review_views(store, experiment, pair, ranked),
                            [f"statistics and the study's figures are missing ({exc})"])
    except BadInput as exc:
        return PairAnalysis({}, [], [], [f"no comparison: {exc.message}"])
    stats = rep.summary_dict()
    stats["per_review"] = {
        "agreement": {lvl: [r.to_dict() for r in a.rows] for lvl, a in rep.agreement.items()},
        "noise_floor": {lvl: [r.to_dict() for r in a.noise_rows] for lvl, a in rep.agreement.items()},
        "magnitude": [r.to_dict() for r in rep.magnitude.rows],
        "triage": [t.to_dict() for t in rep.triage],
    }
    ranked = [(t.review_id, (1.0 - t.spearman) if t.spearman is not None else None) for t in rep.triage[:top_reviews]]
    return PairAnalysis(stats, pair_figures(rep), review_views(store, experiment, pair, ranked), list(rep.notes))


def pair_figures(rep: Any) -> list[FigureSpec]:
    """The study's four figures plus agreement and faithfulness, from engine.figures' builders."""
    from engine import figures

    build = getattr(figures, "pair_figures", None) or getattr(figures, "study_figures", None)
    return list(build(rep)) if build is not None else []


# -- the `shapdiff export` command ---------------------------------------------------------

def add_export_parser(sub: Any, common: Callable[[Any], None]) -> None:
    """Register `shapdiff export` (called from engine.cli's parser)."""
    p = sub.add_parser("export", help="write figures, tables, statistics and a self-contained report.html")
    common(p)
    p.add_argument("--out", metavar="DIR", help="output folder (default: WORKSPACE/exports/EXPERIMENT)")
    p.add_argument("--format", default="png,svg", help="figure formats, comma-separated: png,svg,pdf (default png,svg)")
    p.add_argument("--experiment", help="experiment (preset) name; default: the latest")
    p.add_argument("--ref", metavar="MODEL", help="reference model (default: the experiment's reference)")
    p.add_argument("--other", metavar="MODEL", help="compare only with this model (default: every other model)")
    p.add_argument("--force", action="store_true", help="replace a different earlier export in --out")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_export)


def cmd_export(args: Any) -> int:
    from engine.cli import _open_existing_store, _workspace, print_json, progress_reporter
    from engine.jobs import require_experiment

    formats = parse_formats(args.format)
    with _open_existing_store(args) as store:
        experiment = require_experiment(store, args.experiment)
        out = Path(args.out) if args.out else _workspace(args).exports_dir / safe_stem(experiment)
        with progress_reporter(args.quiet) as report:
            summary = export_experiment(store, out, experiment=experiment, formats=formats, ref=args.ref,
                                        other=args.other, force=args.force, on_progress=report)
    if args.json:
        print_json(summary.to_dict())
        return 0
    verb = {"written": "wrote", "replaced": "replaced the earlier export with",
            "unchanged": "unchanged (identical to the earlier export):"}[summary.status]
    print(f"{verb} {len(summary.files)} files in {summary.out}")
    for pair in summary.pairs:
        print(f"  {pair}")
    for note in summary.notes:
        print(f"  note: {note}")
    print(f"open {summary.out / REPORT}")
    return 0
