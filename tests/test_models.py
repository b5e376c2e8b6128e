"""Label resolution, the hub-loading code path on local folders, and loading safety."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.errors import BadInput
from engine.models import content_hash, load_classifier, model_id, resolve_positive_index


@pytest.mark.parametrize("labels,expected", [
    (["NEGATIVE", "POSITIVE"], 1),
    (["POSITIVE", "NEGATIVE"], 0),
    (["LABEL_0", "LABEL_1"], 1),
    (["neg", "pos"], 1),
    (["pos", "neg"], 0),
    (["0", "1"], 1),
    (["Negative", "Positive"], 1),
])
def test_positive_label_schemes(labels: list[str], expected: int) -> None:
    assert resolve_positive_index(labels) == expected


def test_explicit_positive_label_wins() -> None:
    assert resolve_positive_index(["LABEL_0", "LABEL_1"], "LABEL_0") == 0
    assert resolve_positive_index(["a", "b"], 1) == 1
    with pytest.raises(BadInput, match="not one of the model's labels"):
        resolve_positive_index(["a", "b"], "c")


def test_non_sentiment_labels_get_a_clear_error() -> None:
    with pytest.raises(BadInput, match="cannot tell which output is positive"):
        resolve_positive_index(["entailment", "contradiction"])
    with pytest.raises(BadInput, match="3 outputs") as exc:
        resolve_positive_index(["negative", "neutral", "positive"])
    assert "positive_label" in exc.value.hint


def test_load_local_folder(tiny_model_dir: Path) -> None:
    m = load_classifier(str(tiny_model_dir), name="tiny")
    assert m.kind == "local" and m.positive_index == 1 and m.device == "cpu"
    assert m.label_names == ["NEGATIVE", "POSITIVE"]
    assert m.max_length == 512
    assert m.id == model_id(content_hash(tiny_model_dir), "")
    row = m.store_row()
    assert row["content_hash"] == m.content_hash and row["n_params"] > 0


def test_bf16_dtype(tiny_model_dir: Path) -> None:
    import torch

    m = load_classifier(str(tiny_model_dir), dtype="bf16")
    assert next(m.model.parameters()).dtype == torch.bfloat16


def test_content_hash_follows_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    from conftest import build_tiny_classifier

    other = build_tiny_classifier(tmp_path / "other", seed=1)
    assert content_hash(other) != content_hash(tiny_model_dir)
    assert model_id(content_hash(other), "int8") != model_id(content_hash(other), "")


def test_unknown_hub_id_offline_says_how_to_use_a_local_folder(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(BadInput) as exc:
        load_classifier("nobody/no-such-model-xyz")
    assert "hub is offline" in exc.value.message
    assert "local-dir" in exc.value.hint


def test_missing_folder_and_non_model_folder(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        load_classifier(str(tmp_path / "missing"))
    with pytest.raises(BadInput, match="no config.json"):
        load_classifier(str(tmp_path))


def test_pickled_weights_need_explicit_permission(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(BadInput, match="pickled weights"):
        load_classifier(str(folder))
    m = load_classifier(str(folder), allow_pickle=True)
    assert m.positive_index == 1


def test_three_label_model_is_refused(tmp_path: Path) -> None:
    from conftest import build_tiny_classifier

    folder = build_tiny_classifier(tmp_path / "three", labels=("negative", "neutral", "positive"))
    with pytest.raises(BadInput, match="3 outputs"):
        load_classifier(str(folder))
    cfg = json.loads((folder / "config.json").read_text())
    assert len(cfg["id2label"]) == 3
