"""Fuzzing the preset parser with hypothesis: any file content or any TOML-shaped data gives
a Preset or BadInput (with a message naming what is wrong); never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.config import Preset, load_preset, parse_preset
from engine.errors import BadInput

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

toml_scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
                | st.sampled_from(["int8", "prune:0.3", "prune:2", "reference", "compressed", "fp32", "bf16",
                                   "imdb", "csv", "..", "../x", "/etc/passwd", "zoo:teacher"]))
values = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
KEYS = {
    "": ["name", "description", "data", "sample", "models", "predict", "explain"],
    "data": ["dataset", "split", "path", "text_column", "label_column", "hf_name"],
    "sample": ["metrics_n", "explain_n", "seed"],
    "models": ["name", "source", "role", "variant", "positive_label", "trust_remote_code", "allow_pickle"],
    "predict": ["max_length", "batch_size", "dtype", "device"],
    "explain": ["mode", "max_evals", "output", "seed", "batch_size", "dtype", "max_length", "device", "noise_seed", "noise_max_evals"],
}


def section(name: str):
    return st.dictionaries(st.sampled_from(KEYS[name] + ["unknown"]), values, max_size=6)


presets = st.fixed_dictionaries(
    {}, optional={"name": st.text(max_size=10) | values, "data": section("data") | values,
                  "sample": section("sample") | values,
                  "models": st.lists(section("models"), max_size=3) | values,
                  "predict": section("predict") | values, "explain": section("explain") | values,
                  "extra": values})


def _check(fn, *args) -> None:
    try:
        p = fn(*args)
    except BadInput as exc:
        assert str(exc).strip()
        return
    assert isinstance(p, Preset)
    assert len([m for m in p.models if m.role == "reference"]) == 1
    assert p.sample.explain_n <= p.sample.metrics_n
    p.hash()                 # the stored form is computable
    parse_preset(p.to_dict())  # and round-trips


@settings(FUZZ)
@given(presets)
@example({"name": "x", "models": [{"name": "a", "source": "s", "role": "reference"}]})
@example({"name": "x", "models": [{"name": "a", "source": "s", "role": "reference", "positive_label": float("nan")}]})
def test_preset_data(data):
    _check(parse_preset, data, "fuzz")


@settings(FUZZ)
@given(st.text(max_size=400) | st.binary(max_size=400))
@example(b"\xff\xfe")
@example("[[models]]\n" * 50)
@example("a = [" * 2000)
@example('name = "x"\n[[models]]\nname = "a"\nsource = "s"\nrole = "reference"\n')
def test_preset_file_any_content(content):
    p = Path(tempfile.mkdtemp(prefix="shapdiff-fuzz-")) / "p.toml"
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8", errors="surrogatepass")
    _check(load_preset, str(p))
