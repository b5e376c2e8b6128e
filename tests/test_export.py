"""`shapdiff export`: every file exists and is valid, exports are byte-identical, and a
different earlier export is never replaced silently. Uses the synthetic demo workspace."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from engine.cli import main
from engine.demo import build_demo_workspace
from engine.errors import BadInput
from engine.export import (ATTRIBUTION_COLUMNS, MANIFEST, METRICS_COLUMNS, REPORT, export_experiment,
                           export_figures, parse_formats)
from engine.figures import FigureSpec, Series
from engine.store import open_store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def reuse_pair_reports():
    """One compare.pair_report per (workspace, pair) in this module: several exports of one
    unchanged workspace need the same statistics, and they take seconds each."""
    compare = pytest.importorskip("engine.compare")
    real, memo = compare.pair_report, {}

    def cached(store, experiment=None, ref=None, other=None, **kw):
        key = (str(store.path), experiment, ref, other, tuple(sorted(kw.items())))
        if key not in memo:
            memo[key] = real(store, experiment, ref, other, **kw)
        return memo[key]

    mp = pytest.MonkeyPatch()
    mp.setattr(compare, "pair_report", cached)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo-ws")
    build_demo_workspace(root, n_reviews=40, n_explained=12)
    return root


@pytest.fixture(scope="module")
def exported(demo_ws, tmp_path_factory) -> Path:
    """The full export (every pair, every format), written once for the module."""
    out = tmp_path_factory.mktemp("exports") / "first"
    with open_store(demo_ws / "shapdiff.db") as store:
        summary = export_experiment(store, out, formats="png,svg,pdf")
    assert summary.status == "written"
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _check_figure(path: Path) -> None:
    data = path.read_bytes()
    if path.suffix == ".png":
        assert data.startswith(PNG_MAGIC), path
    elif path.suffix == ".pdf":
        assert data.startswith(b"%PDF-") and b"%%EOF" in data[-64:], path
    elif path.suffix == ".svg":
        root = ET.fromstring(data)
        assert root.tag.endswith("svg"), path
    else:  # pragma: no cover
        raise AssertionError(f"unexpected figure file {path}")


def test_every_file_exists_and_is_valid(exported: Path) -> None:
    files = _files(exported)
    for name in ("metrics.csv", "metrics.md", REPORT, MANIFEST):
        assert name in files
    pairs = ["teacher-vs-student", "teacher-vs-teacher-int8"]
    for d in pairs:
        for name in ("attributions.csv", "metrics.csv", "metrics.md", "statistics.json"):
            assert f"{d}/{name}" in files, f"{d}/{name} missing"

    rows = list(csv.DictReader(io.StringIO(files["metrics.csv"].decode())))
    assert tuple(rows[0].keys()) == METRICS_COLUMNS
    assert {r["model"] for r in rows} == {"teacher", "student", "teacher-int8"}
    assert {r["class"] for r in rows} == {"negative", "positive"}
    assert all(0.0 <= float(r["f1"]) <= 1.0 for r in rows)
    md = files["metrics.md"].decode()
    assert "| model | role | class | precision" in md and "teacher-int8" in md

    for d in pairs:
        attr = list(csv.DictReader(io.StringIO(files[f"{d}/attributions.csv"].decode())))
        assert tuple(attr[0].keys()) == ATTRIBUTION_COLUMNS
        ref, other = d.split("-vs-")
        assert {r["model"] for r in attr} == {ref, other}
        # one row per review, model and token: 12 explained reviews for each model
        assert len({(r["review_id"], r["model"]) for r in attr}) == 24
        assert len({(r["review_id"], r["model"], r["position"]) for r in attr}) == len(attr)
        float(attr[1]["value"])

        stats = json.loads(files[f"{d}/statistics.json"])
        assert {"experiment", "reference", "other", "metrics", "comparison"} <= set(stats)
        assert stats["reference"] == ref and stats["other"] == other
        assert [m["name"] for m in stats["metrics"]] == [ref, other]
        if stats["comparison"]:     # engine.compare available
            assert {"magnitude", "agreement", "top_features", "differences", "per_review"} <= set(stats["comparison"])
            assert {"raw", "normalised"} <= set(stats["comparison"]["magnitude"])

    figures = [exported / f for f in files if "/figures/" in f]
    for f in figures:
        _check_figure(f)
    stems = {f.with_suffix("") for f in figures}
    for stem in stems:    # every figure in every requested format
        assert all(stem.with_suffix(s).exists() for s in (".png", ".svg", ".pdf")), stem

    manifest = json.loads(files[MANIFEST])
    assert manifest["experiment"] == "demo" and manifest["formats"] == ["png", "svg", "pdf"]
    assert set(manifest["files"]) == set(files) - {MANIFEST}


def test_second_export_is_byte_identical(demo_ws: Path, exported: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    with open_store(demo_ws / "shapdiff.db") as store:
        # "unchanged" means every file of the new export equals the earlier one, byte for byte
        assert export_experiment(store, copy, formats=("png", "svg", "pdf")).status == "unchanged"
    assert _files(copy) == _files(exported)


def test_refuses_to_replace_a_different_export_without_force(demo_ws: Path, exported: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(exported, out)
    before = _files(out)
    with open_store(demo_ws / "shapdiff.db") as store:
        with pytest.raises(BadInput) as exc:
            export_experiment(store, out, formats="svg", other="student")
        assert exc.value.exit_code == 2 and "--force" in (exc.value.hint or "")
        assert _files(out) == before                      # nothing was touched
        (out / "notes.txt").write_text("mine")            # someone else's file stays
        summary = export_experiment(store, out, formats="svg", other="student", force=True)
    assert summary.status == "replaced"
    after = _files(out)
    assert after["notes.txt"] == b"mine"
    assert any(f.endswith(".svg") for f in after)
    assert not any(f.endswith((".png", ".pdf")) for f in after), "stale files of the earlier export remain"
    assert not any(f.startswith("teacher-vs-teacher-int8/") for f in after)
    assert not list(tmp_path.glob(".shapdiff-export-*")), "staging folder left behind"


def test_refuses_a_folder_that_is_not_an_export(demo_ws: Path, tmp_path: Path) -> None:
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("\\section{x}")
    code = main(["export", "--workspace", str(demo_ws), "--out", str(out), "--quiet"])
    assert code == 2
    assert [p.name for p in out.iterdir()] == ["chapter1.tex"]


def test_cli_json_and_bad_input(demo_ws: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    assert main(["export", "--workspace", str(demo_ws), "--out", str(out), "--other", "student",
                 "--format", "png", "--json"]) == 0
    cap = capsys.readouterr()
    data = json.loads(cap.out)       # stdout holds only the JSON; progress went to stderr as plain lines
    assert "[export] teacher vs student: figures" in cap.err and "\x1b[" not in cap.err
    assert data["status"] == "written" and data["pairs"] == ["teacher vs student"]
    assert "teacher-vs-student/statistics.json" in data["files"] and REPORT in data["files"]
    assert main(["export", "--workspace", str(demo_ws), "--out", str(tmp_path / "x"), "--format", "gif"]) == 2
    assert main(["export", "--workspace", str(demo_ws), "--out", str(tmp_path / "x"), "--ref", "nope"]) == 2
    assert main(["export", "--workspace", str(tmp_path / "empty"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "gif" in err and "nope" in err


def test_model_names_cannot_escape_the_output_folder(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    build_demo_workspace(ws, n_reviews=12, n_explained=4)
    con = sqlite3.connect(ws / "shapdiff.db")
    con.execute("UPDATE experiment_models SET name = '../../evil/<b>x' WHERE name = 'student'")
    con.commit()
    con.close()
    out = tmp_path / "deep" / "out"
    assert main(["export", "--workspace", str(ws), "--out", str(out), "--format", "svg", "--other",
                 "../../evil/<b>x", "--quiet"]) == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".db" and "-wal" not in p.name
               and "-shm" not in p.name]
    assert written and all(p.resolve().is_relative_to(out.resolve()) for p in written)
    assert not (tmp_path / "evil").exists()
    html = (out / REPORT).read_text()
    assert "&lt;b&gt;x" in html and "<b>x" not in html


def test_export_figures_is_one_code_path(tmp_path: Path) -> None:
    spec = FigureSpec("../top_features-../../x", "barh", "Top features", "mean |SHAP|", "feature",
                      (Series("teacher", (0.5, 0.25), ("great", "awful")),))
    paths = export_figures([spec], tmp_path / "figs", ("png", "svg", "pdf"))
    assert [p.suffix for p in paths] == [".png", ".svg", ".pdf"]
    for p in paths:
        assert p.parent == tmp_path / "figs"
        _check_figure(p)
    first = [p.read_bytes() for p in paths]
    assert [p.read_bytes() for p in export_figures([spec], tmp_path / "figs", ("png", "svg", "pdf"))] == first
    with pytest.raises(BadInput):
        parse_formats("png,jpeg")
    assert parse_formats(" PNG, svg,png ") == ("png", "svg")


def test_a_failed_write_exits_1_and_says_what_to_do(demo_ws: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import errno

    import engine.export as export

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export.os, "replace", full_disk)
    code = main(["export", "--workspace", str(demo_ws), "--out", str(tmp_path / "o"), "--other", "student",
                 "--format", "svg", "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "what to do" in err and "Traceback" not in err
    assert not list(tmp_path.glob(".shapdiff-export-*"))
