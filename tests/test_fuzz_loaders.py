"""Fuzzing the loaders with hypothesis: any bytes (or any JSON values) give either loaded
reviews that the store can hold, or BadInput; never another exception."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.datasets import (LoadedData, decode_bytes, load_csv, load_glue_sst2, load_imdb_folder,
                             load_imdb_jsonl, load_rt_polarity, load_sst2)
from engine.errors import BadInput

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)
labels = st.sampled_from([0, 1, "0", "1", True, False, 2, -1, 1.0, 0.5, None, "pos", [1], {}]) | json_values
texts = st.text() | st.sampled_from(["", " ", "\x00", "😀", "a\ud800b", "<br />", "x" * 1000]) | json_values
ids = st.none() | st.text(max_size=8) | st.integers(0, 5) | json_values


def _valid(data: LoadedData) -> None:
    """What the store needs from loaded reviews."""
    assert data.reviews
    seen = set()
    for r in data.reviews:
        assert isinstance(r.text, str) and r.text.strip() and "\x00" not in r.text
        r.text.encode("utf-8")                      # storable
        assert r.label in (0, 1) and type(r.label) is int
        assert r.rating is None or type(r.rating) is int
        assert r.id not in seen
        seen.add(r.id)
        row = r.row()
        assert row["n_chars"] == len(r.text)


def _load(fn, *args) -> None:
    try:
        data = fn(*args)
    except BadInput as exc:
        assert str(exc)
        return
    if data.reviews:
        _valid(data)


def _tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="shapdiff-fuzz-"))


@FUZZ
@given(st.binary(max_size=2000), st.booleans())
@example(b"", True)
@example(b"\x1f\x8b\x08\x00", False)
@example(b'{"text": "a", "label": 1}\n{"text": "a", "label": 1}\n', True)
def test_jsonl_any_bytes(raw, compress):
    d = _tmp()
    p = d / "f.jsonl.gz"
    p.write_bytes(gzip.compress(raw) if compress else raw)
    _load(load_imdb_jsonl, p)
    p2 = d / "f.jsonl"
    p2.write_bytes(raw)
    _load(load_imdb_jsonl, p2)


@FUZZ
@given(st.lists(st.dictionaries(st.sampled_from(["id", "text", "label", "rating", "x"]),
                                st.one_of(texts, labels, ids), max_size=5), max_size=6))
def test_jsonl_any_json_objects(objs):
    d = _tmp()
    p = d / "f.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8", errors="surrogatepass") as fh:
        for o in objs:
            fh.write(json.dumps(o) + "\n")
    _load(load_imdb_jsonl, p)


@FUZZ
@given(st.lists(st.fixed_dictionaries({"text": texts, "label": labels}, optional={"id": ids, "rating": json_values}),
                min_size=1, max_size=6))
def test_jsonl_review_fields(objs):
    d = _tmp()
    p = d / "f.jsonl"
    p.write_text("\n".join(json.dumps(o) for o in objs), encoding="utf-8", errors="surrogatepass")
    _load(load_imdb_jsonl, p)


@FUZZ
@given(st.binary(max_size=1500))
@example(b"text,label\n")
@example(b'text,label\n"unterminated,1\n')
@example(b"text,label\nx\x00y,1\n")
def test_csv_any_bytes(raw):
    p = _tmp() / "f.csv"
    p.write_bytes(raw)
    _load(load_csv, p)
    p.write_bytes(b"id,text,label\n" + raw)
    _load(load_csv, p)


@FUZZ
@given(st.lists(st.tuples(st.text(max_size=30), st.sampled_from(["0", "1", "2", "", "x", "1.0"])), max_size=8))
def test_csv_rows(rows):
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["text", "label"])
    w.writerows(rows)
    p = _tmp() / "f.csv"
    p.write_bytes(buf.getvalue().encode("utf-8", "surrogatepass"))
    _load(load_csv, p)


@FUZZ
@given(st.binary(max_size=1500))
@example(b"1 \n0 ok\n")
def test_sst2_and_glue_any_bytes(raw):
    d = _tmp()
    (d / "s").write_bytes(raw)
    _load(load_sst2, d / "s")
    (d / "g.tsv").write_bytes(b"sentence\tlabel\n" + raw)
    _load(load_glue_sst2, d / "g.tsv")
    (d / "g2.tsv").write_bytes(raw)
    _load(load_glue_sst2, d / "g2.tsv")


@FUZZ
@given(st.binary(max_size=800), st.binary(max_size=800))
def test_rt_polarity_any_bytes(pos, neg):
    d = _tmp()
    (d / "rt-polarity.pos").write_bytes(pos)
    (d / "rt-polarity.neg").write_bytes(neg)
    _load(load_rt_polarity, d)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["pos", "neg"]), st.text("0123456789_ab", min_size=1, max_size=6),
                          st.binary(max_size=200)), max_size=5))
def test_imdb_folder_any_files(files):
    d = _tmp()
    for pol in ("pos", "neg"):
        (d / "test" / pol).mkdir(parents=True)
    for pol, stem, raw in files:
        (d / "test" / pol / f"{stem}.txt").write_bytes(raw)
    _load(load_imdb_folder, d, "test")


@given(st.binary(max_size=300))
def test_decode_bytes_never_fails(raw):
    text, enc = decode_bytes(raw)
    assert enc in ("utf-8", "cp1252", "latin-1")
    assert isinstance(text, str)
