"""Security: model loading runs no remote code and unpickles nothing unless the preset names it
(and even then torch's weights-only loader refuses code); damaged weights are refused, never
used; preset data paths and export names cannot escape their folders; review text printed by
the CLI is never read as Rich markup."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import BadInput
from engine.models import load_classifier


class _Evil:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _copy_model(src: Path, dst: Path, files=("config.json", "tokenizer.json", "tokenizer_config.json")) -> Path:
    dst.mkdir(parents=True)
    for n in files:
        shutil.copy(src / n, dst / n)
    return dst


def test_pickle_only_folder_is_refused_without_allow_pickle(tmp_path, tiny_model_dir):
    marker = tmp_path / "PWNED"
    f = _copy_model(tiny_model_dir, tmp_path / "pickle_only")
    (f / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Evil(marker)}))
    with pytest.raises(BadInput, match="allow_pickle = true"):
        load_classifier(str(f))
    assert not marker.exists()
    # allowed by the preset: transformers unpickles with torch's weights-only loader, which
    # refuses anything but tensors, so the payload still does not run
    with pytest.raises(BadInput, match="cannot load the weights"):
        load_classifier(str(f), allow_pickle=True)
    assert not marker.exists()


def test_allow_pickle_loads_a_plain_state_dict(tmp_path, tiny_model_dir):
    import torch
    from safetensors.torch import load_file

    f = _copy_model(tiny_model_dir, tmp_path / "bin_model")
    torch.save(load_file(tiny_model_dir / "model.safetensors"), f / "pytorch_model.bin")
    assert (f / "pytorch_model.bin").exists() and not list(f.glob("*.safetensors"))
    with pytest.raises(BadInput):
        load_classifier(str(f))
    m = load_classifier(str(f), allow_pickle=True)
    assert m.label_names == ["NEGATIVE", "POSITIVE"]


def test_remote_code_is_never_run_unless_trusted(tmp_path, tiny_model_dir):
    marker = tmp_path / "REMOTE_RAN"
    g = _copy_model(tiny_model_dir, tmp_path / "remote", ("config.json", "tokenizer.json", "tokenizer_config.json",
                                                          "model.safetensors"))
    cfg = json.loads((g / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForSequenceClassification": "evil.EvilModel"}
    cfg["model_type"] = "evil-bert"
    (g / "config.json").write_text(json.dumps(cfg))
    (g / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(BadInput, match="trust_remote_code = true"):
        load_classifier(str(g))
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated weights", "garbage weights", "config not json", "no weights"])
def test_damaged_model_folder_is_refused_not_used(tmp_path, tiny_model_dir, damage):
    """A half-written model folder (an interrupted copy or build) gives BadInput, never a model."""
    g = tmp_path / "m"
    shutil.copytree(tiny_model_dir, g)
    w = g / "model.safetensors"
    if damage == "truncated weights":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif damage == "garbage weights":
        w.write_bytes(b"\x00" * 64)
    elif damage == "config not json":
        (g / "config.json").write_text('{"architectures": ["Bert')
    else:
        w.unlink()
    with pytest.raises(BadInput):
        load_classifier(str(g))


def test_cli_run_with_a_pickle_only_model_exits_2(tmp_path, tiny_model_dir, capsys, shared_data):
    from engine.cli import main

    f = _copy_model(tiny_model_dir, tmp_path / "pickle_only")
    (f / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Evil(tmp_path / "PWNED")}))
    p = tmp_path / "p.toml"
    p.write_text(f'name = "sec"\n[sample]\nmetrics_n = 4\nexplain_n = 0\n'
                 f'[[models]]\nname = "m"\nsource = "{f}"\nrole = "reference"\n')
    rc = main(["run", "--preset", str(p), "--workspace", str(tmp_path / "ws"), "--data-path", str(shared_data),
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "allow_pickle" in err
    assert not (tmp_path / "PWNED").exists()


# -- paths ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["../secret.csv", "sub/../../secret.csv", "/etc/passwd", "~/x.csv"])
def test_preset_data_path_cannot_leave_the_data_folder(tmp_path, path):
    from engine.config import parse_preset
    from engine.datasets import _resolve

    (tmp_path / "secret.csv").write_text("text,label\nsecret,1\n")
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    with pytest.raises(BadInput, match="data.path"):
        parse_preset({"name": "x", "data": {"dataset": "csv", "path": path},
                      "models": [{"name": "a", "source": "s", "role": "reference"}]})
    if not path.startswith("~"):
        with pytest.raises(BadInput, match="outside the data folder"):   # and the loader checks again
            _resolve(data, path, "x")


def test_names_cannot_be_dot_dot():
    from engine.config import parse_preset

    for name in (".", "..", "..."):
        with pytest.raises(BadInput):
            parse_preset({"name": name, "models": [{"name": "a", "source": "s", "role": "reference"}]})
        with pytest.raises(BadInput):
            parse_preset({"name": "x", "models": [{"name": name, "source": "s", "role": "reference"}]})
    for name in ("../x", "a/b", "a\\b", "x y"):
        with pytest.raises(BadInput):
            parse_preset({"name": name, "models": [{"name": "a", "source": "s", "role": "reference"}]})


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_export_file_names_stay_in_their_folder(key):
    from engine.figures import safe_stem

    stem = safe_stem(key)
    assert stem and "/" not in stem and "\\" not in stem and "\x00" not in stem
    assert stem not in (".", "..")
    folder = Path("/tmp/exports/pair")
    assert (folder / f"{stem}.png").resolve().parent == folder.resolve()


# -- review text is data, not markup ---------------------------------------------------------------

class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_cli_progress_prints_markup_literally(monkeypatch):
    """Progress messages can carry review-derived text or paths: Rich must print them as is."""
    from engine.cli import progress_reporter
    from engine.progress import Progress

    buf = _Tty()
    monkeypatch.setattr(sys, "stderr", buf)
    monkeypatch.setenv("COLUMNS", "200")
    evil = "[bold red]boom[/bold red] [link=file:///etc/passwd]x[/link] :smile:"
    with progress_reporter() as report:
        report(Progress("data", f"loading {evil}"))
        report(Progress("predict", f"m {evil}", 1, 2, "m"))
    out = buf.getvalue()
    assert "[bold red]boom[/bold red]" in out
    assert "[link=file:///etc/passwd]" in out
    assert "\x1b]8;" not in out          # no hyperlink escape was produced
