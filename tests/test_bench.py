"""`shapdiff bench shap` on the tiny model: the figures are there and the JSON line parses."""

from __future__ import annotations

import json

import pytest


def test_bench_shap_result(tiny_model_dir):
    from engine.bench import bench_shap
    from engine.models import load_classifier

    loaded = load_classifier(str(tiny_model_dir), name="tiny")
    texts = ["A fine, funny film; I laughed a lot.", "Dull.\nNothing happens, and the ending is worse!"]
    res = bench_shap(loaded, texts, max_evals=40, max_length=32, engine_dtype="fp32")
    assert res.reviews == 2 and res.max_evals == 40 and res.engine_dtype == "fp32"
    assert res.baseline_rps > 0 and res.engine_rps > 0
    assert res.ratio == pytest.approx(res.engine_rps / res.baseline_rps, rel=1e-6)
    assert len(res.spearman) == 2 and len(res.per_review) == 2
    assert res.min_spearman <= res.median_spearman <= 1.0
    assert res.min_spearman > 0.8
    assert "ratio" in res.line()


def test_spearman_aligns_by_span():
    from engine.bench import spearman

    a = {(0, 1): 1.0, (2, 3): 2.0, (4, 5): 3.0, (6, 7): 9.0}
    b = {(0, 1): 10.0, (2, 3): 20.0, (4, 5): 30.0}
    assert spearman(a, b) == pytest.approx(1.0)
    assert spearman({(0, 1): 1.0}, {(0, 1): 1.0}) != spearman({(0, 1): 1.0}, {(0, 1): 1.0})  # nan: too few


def test_bench_cli_json_last_line(tiny_model_dir, shared_data, capsys):
    from engine.cli import main

    rc = main(["bench", "shap", "--model", str(tiny_model_dir), "--reviews", "1", "--max-evals", "20",
               "--max-length", "24", "--dtype", "fp32", "--json", "--data-path", str(shared_data)])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    obj = json.loads(last)
    for key in ("baseline_rps", "engine_rps", "ratio", "min_spearman", "median_spearman"):
        assert key in obj
    assert obj["reviews"] == 1 and obj["max_evals"] == 20
