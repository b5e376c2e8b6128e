"""The pipeline and CLI on a tiny local model: run, idempotent rerun, metrics, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.config import load_preset
from engine.jobs import run_experiment
from engine.metrics import class_metrics, experiment_metrics
from engine.store import open_store
from engine.workspace import Workspace


def write_preset(path: Path, model_dir: Path, *, n: int = 24, extra_models: str = "") -> Path:
    path.write_text(f"""
name = "tiny"
[data]
dataset = "imdb"
[sample]
metrics_n = {n}
explain_n = 2
seed = 7
[[models]]
name = "ref"
source = "{model_dir}"
role = "reference"
{extra_models}
[predict]
max_length = 64
batch_size = 8
""")
    return path


def test_run_predicts_then_rerun_computes_nothing(tmp_path: Path, tiny_model_dir: Path, shared_data: Path) -> None:
    preset = load_preset(write_preset(tmp_path / "p.toml", tiny_model_dir))
    ws = Workspace(tmp_path / "ws")
    s1 = run_experiment(preset, ws, data_path=shared_data, explain=False)
    assert s1.models[0].predicted == 24 and s1.computed == 24
    s2 = run_experiment(preset, ws, data_path=shared_data, explain=False)
    assert s2.computed == 0 and s2.models[0].prediction_reused == 24
    with open_store(ws.db_path) as st:
        rows = st.db.execute("SELECT * FROM predictions").fetchall()
        assert len(rows) == 24
        p = next(iter(st.db.query("SELECT * FROM predictions LIMIT 1")))
        assert json.loads(p["settings"]) == {"dtype": "fp32", "max_length": 64}
        assert json.loads(p["versions"])["torch"].startswith("2.")
        assert p["n_tokens"] <= 64
        truncated = st.db.execute("SELECT SUM(truncated) FROM predictions").fetchone()[0]
        assert truncated > 0   # IMDB reviews are longer than 64 tokens: recorded, not dropped
        model = st.model(p["model_id"])
        assert model["content_hash"] and model["source"] == str(tiny_model_dir)


def test_metrics_equal_scikit_learn(tmp_path: Path, tiny_model_dir: Path, shared_data: Path) -> None:
    from sklearn.metrics import classification_report

    preset = load_preset(write_preset(tmp_path / "p.toml", tiny_model_dir, n=30))
    ws = Workspace(tmp_path / "ws")
    run_experiment(preset, ws, data_path=shared_data, explain=False)
    with open_store(ws.db_path) as st:
        [m] = experiment_metrics(st, "tiny")
        rows = list(st.db.query("SELECT r.label, p.pred FROM predictions p JOIN reviews r ON r.id = p.review_id"))
    y, yhat = [r["label"] for r in rows], [r["pred"] for r in rows]
    ref = classification_report(y, yhat, labels=[0, 1], output_dict=True, zero_division=0)
    assert m.n == 30 and m.classes[0].support == 15 and m.classes[1].support == 15
    for i, c in enumerate(m.classes):
        assert c.precision == pytest.approx(ref[str(i)]["precision"])
        assert c.recall == pytest.approx(ref[str(i)]["recall"])
        assert c.f1 == pytest.approx(ref[str(i)]["f1-score"])
    assert m.accuracy == pytest.approx(ref["accuracy"])
    assert sum(map(sum, m.confusion)) == 30


def test_class_metrics_hand_case() -> None:
    acc, classes, cm = class_metrics([0, 0, 1, 1], [0, 1, 1, 1])
    assert acc == 0.75 and cm == ((1, 1), (0, 2))
    assert classes[1].precision == pytest.approx(2 / 3) and classes[0].recall == 0.5


def test_cli_run_and_metrics(tmp_path: Path, tiny_model_dir: Path, shared_data: Path, capsys) -> None:
    preset = write_preset(tmp_path / "p.toml", tiny_model_dir, n=10)
    args = ["run", "--preset", str(preset), "--workspace", str(tmp_path / "ws"), "--data-path", str(shared_data),
            "--no-explain", "--quiet"]
    assert main(args) == 0
    assert main(args) == 0
    assert "nothing to compute" in capsys.readouterr().out
    assert main(["metrics", "--workspace", str(tmp_path / "ws"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["experiment"] == "tiny" and out["models"][0]["n"] == 10
    assert main(["metrics", "--workspace", str(tmp_path / "ws")]) == 0
    assert "negative" in capsys.readouterr().out


@pytest.mark.parametrize("case,expect", [
    ("no-data", "no data at"),
    ("unknown-model", "hub is offline"),
    ("bad-preset", "unknown key"),
    ("missing-preset", "no preset named"),
    ("corrupt-db", "not a readable shapdiff database"),
])
def test_bad_input_exits_2_with_a_message(case: str, expect: str, tmp_path: Path, tiny_model_dir: Path,
                                          shared_data: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    ws = tmp_path / "ws"
    preset = write_preset(tmp_path / "p.toml", tiny_model_dir, n=4)
    data = shared_data
    if case == "no-data":
        data = tmp_path / "empty"
        data.mkdir()
    elif case == "unknown-model":
        preset.write_text(preset.read_text().replace(str(tiny_model_dir), "nobody/not-a-model"))
    elif case == "bad-preset":
        preset.write_text(preset.read_text() + "\nbogus = 1\n")
    elif case == "missing-preset":
        preset = Path("no-such-preset")
    elif case == "corrupt-db":
        ws.mkdir()
        (ws / "shapdiff.db").write_bytes(b"garbage" * 1000)
    code = main(["run", "--preset", str(preset), "--workspace", str(ws), "--data-path", str(data), "--no-explain",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert expect in err and "what to do:" in err and "Traceback" not in err
    if case == "corrupt-db":
        assert (ws / "shapdiff.db").read_bytes() == b"garbage" * 1000


def test_metrics_on_empty_workspace(tmp_path: Path, capsys) -> None:
    assert main(["metrics", "--workspace", str(tmp_path)]) == 2
    assert "shapdiff run" in capsys.readouterr().err


def test_full_run_explains_with_noise_floor_and_faithfulness(tmp_path: Path, tiny_model_dir: Path,
                                                             shared_data: Path) -> None:
    from engine.jobs import explain_hash

    preset_file = write_preset(tmp_path / "p.toml", tiny_model_dir, n=6, extra_models=f"""
[[models]]
name = "ref-int8"
source = "{tiny_model_dir}"
variant = "int8"
""")
    preset_file.write_text(preset_file.read_text() + "\n[explain]\nmax_evals = 40\nmax_length = 32\n")
    preset = load_preset(preset_file)
    ws = Workspace(tmp_path / "ws")
    s1 = run_experiment(preset, ws, data_path=shared_data)
    ref, other = s1.models
    assert ref.explained == 4 and other.explained == 2      # the reference twice: main + noise floor
    assert ref.faithfulness == 2 and other.faithfulness == 2
    with open_store(ws.db_path) as st:
        main, noise = explain_hash(preset), explain_hash(preset, preset.explain.noise_seed)
        assert main != noise
        assert st.explained_ids(ref.model_id, main) == st.explained_ids(ref.model_id, noise) == set(
            st.sample_ids("tiny", "explain"))
        e = st.explanation(ref.model_id, st.sample_ids("tiny", "explain")[0], noise)
        assert e["max_evals"] == 80 and e["settings"]["seed"] == 1
    s2 = run_experiment(preset, ws, data_path=shared_data)
    assert s2.computed == 0


def test_preset_variants_are_the_compress_module_s() -> None:
    from engine.config import parse_preset
    from engine.errors import BadInput

    base = {"name": "v", "models": [{"name": "a", "source": "x", "role": "reference"}]}
    for ok in ("", "int8", "prune:0.3", "prune:0.3+int8"):
        p = parse_preset(base | {"models": base["models"] + [{"name": "b", "source": "x", "variant": ok}]})
        assert p.models[1].variant == ok
    for bad, msg in (("int4", "unknown variant"), ("prune:1.5", "between 0 and 1"), ("prune:x", "bad prune")):
        with pytest.raises(BadInput, match=msg):
            parse_preset(base | {"models": base["models"] + [{"name": "b", "source": "x", "variant": bad}]})
