"""Loaders on small real slices and built folders; balanced, seeded sampling; data path."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from engine.config import DataSpec
from engine.datasets import (balanced_sample, clean_text, decode_bytes, load_csv, load_dataset, load_glue_sst2,
                             load_imdb_folder, load_imdb_jsonl, load_rt_polarity, load_sst2, resolve_data_path)
from engine.errors import BadInput


def test_imdb_jsonl_real_file(shared_data: Path) -> None:
    data = load_imdb_jsonl(shared_data / "imdb" / "test.jsonl.gz", "test")
    assert len(data.reviews) == 25_000
    assert Counter(r.label for r in data.reviews) == {0: 12_500, 1: 12_500}
    r = next(r for r in data.reviews if r.source_id == "test/neg/0_2")
    assert r.id == "imdb:test/neg/0_2" and r.rating == 2 and r.label == 0
    assert not any("<br" in r.text.lower() for r in data.reviews)


def test_br_tags_become_line_breaks() -> None:
    assert clean_text("a<br />b<br/>c<BR>d") == "a\nb\nc\nd"


def test_imdb_folder_layout(tmp_path: Path) -> None:
    for pol, texts in (("pos", ["Great<br />film", "Loved it"]), ("neg", ["Awful"])):
        d = tmp_path / "aclImdb" / "test" / pol
        d.mkdir(parents=True)
        for i, t in enumerate(texts):
            (d / f"{i}_{9 if pol == 'pos' else 2}.txt").write_text(t)
    data = load_imdb_folder(tmp_path / "aclImdb", "test")
    assert sorted((r.source_id, r.label, r.rating) for r in data.reviews) == [
        ("test/neg/0_2", 0, 2), ("test/pos/0_9", 1, 9), ("test/pos/1_9", 1, 9)]
    assert any(r.text == "Great\nfilm" for r in data.reviews)


def test_csv_and_missing_column(tmp_path: Path) -> None:
    f = tmp_path / "r.csv"
    f.write_text('review,sentiment\n"good, really",1\nbad,0\n')
    data = load_csv(f, "review", "sentiment")
    assert [(r.text, r.label) for r in data.reviews] == [("good, really", 1), ("bad", 0)]
    with pytest.raises(BadInput, match="no column 'text'"):
        load_csv(f)


def test_sst2_and_glue(shared_data: Path, tmp_path: Path) -> None:
    dev = load_sst2(shared_data / "sst2" / "stsa.binary.dev", "dev")
    assert len(dev.reviews) == 872
    assert {r.label for r in dev.reviews} == {0, 1}
    tsv = tmp_path / "dev.tsv"
    tsv.write_text("sentence\tlabel\nit 's a charming journey . \t1\nflat . \t0\n")
    assert [r.label for r in load_glue_sst2(tsv).reviews] == [1, 0]
    with pytest.raises(BadInput, match="not GLUE"):
        load_glue_sst2(shared_data / "sst2" / "stsa.binary.dev")


def test_rt_polarity_is_decoded_and_encoding_reported(shared_data: Path) -> None:
    data = load_rt_polarity(shared_data / "rt-polarity")
    assert Counter(r.label for r in data.reviews) == {0: 5331, 1: 5331}
    assert set(data.encodings) == {"utf-8", "cp1252"}
    assert data.encodings["cp1252"] > 0
    assert "cp1252" in data.encoding_note
    assert not any("\ufffd" in r.text for r in data.reviews)


def test_decode_bytes_prefers_utf8() -> None:
    assert decode_bytes("café".encode()) == ("café", "utf-8")
    assert decode_bytes("café".encode("cp1252")) == ("café", "cp1252")


def _reviews(n_neg: int, n_pos: int):
    from engine.datasets import Review

    return [Review(f"t:{lab}/{i}", "t", "test", f"{lab}/{i}", f"text {i}", lab)
            for lab, n in ((0, n_neg), (1, n_pos)) for i in range(n)]


def test_sampling_is_balanced_seeded_and_nested() -> None:
    revs = _reviews(300, 300)
    s = balanced_sample(revs, 101, 10, seed=42)
    assert len(s.metrics) == 101
    assert Counter(r.label for r in s.metrics) == {0: 51, 1: 50}
    assert Counter(r.label for r in s.explain) == {0: 5, 1: 5}
    assert {r.id for r in s.explain} <= {r.id for r in s.metrics}
    again = balanced_sample(list(reversed(revs)), 101, 10, seed=42)   # input order does not matter
    assert [r.id for r in again.metrics] == [r.id for r in s.metrics]
    other = balanced_sample(revs, 101, 10, seed=43)
    assert [r.id for r in other.metrics] != [r.id for r in s.metrics]


def test_sampling_is_the_same_on_every_machine(shared_data: Path) -> None:
    # PCG64 with a fixed seed over id-sorted reviews: these ids are the study sample's first four.
    data = load_dataset(DataSpec(dataset="imdb", split="test"), shared_data)
    s = balanced_sample(data.reviews, 1001, 10, 42)
    assert [r.id for r in s.explain[:4]] == ["imdb:test/neg/9054_1", "imdb:test/pos/11407_7",
                                             "imdb:test/neg/2478_3", "imdb:test/pos/3875_9"]


def test_sampling_needs_enough_reviews() -> None:
    with pytest.raises(BadInput, match="only 3 positive"):
        balanced_sample(_reviews(10, 3), 10, 2, 0)


def test_data_path_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_data_path(tmp_path) == tmp_path.resolve()
    monkeypatch.setenv("SHAPDIFF_DATA", str(tmp_path))
    assert resolve_data_path(None) == tmp_path.resolve()
    with pytest.raises(BadInput, match="not a folder"):
        resolve_data_path(tmp_path / "nope")
    monkeypatch.delenv("SHAPDIFF_DATA")
    monkeypatch.setattr("engine.datasets.project_settings", lambda: {"data_search_path": [str(tmp_path / "x")]})
    with pytest.raises(BadInput, match="no data folder found"):
        resolve_data_path(None)


def test_empty_data_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(BadInput) as exc:
        load_dataset(DataSpec(dataset="imdb"), tmp_path)
    assert "no data at" in exc.value.message and "--data-path" in exc.value.hint


def test_file_that_is_not_its_format(tmp_path: Path) -> None:
    bad = tmp_path / "imdb" / "test.jsonl.gz"
    bad.parent.mkdir()
    bad.write_text("this is not gzip")
    with pytest.raises(BadInput, match="not a readable gzip"):
        load_dataset(DataSpec(dataset="imdb"), tmp_path)
    with gzip.open(bad, "wt") as fh:
        fh.write("not json\n")
    with pytest.raises(BadInput, match=r"test.jsonl.gz:1: not a JSON line"):
        load_dataset(DataSpec(dataset="imdb"), tmp_path)


def test_empty_review_and_bad_label_are_named(tmp_path: Path) -> None:
    f = tmp_path / "x.jsonl.gz"
    with gzip.open(f, "wt") as fh:
        fh.write(json.dumps({"id": "a", "label": 1, "text": "fine"}) + "\n")
        fh.write(json.dumps({"id": "b", "label": 0, "text": "   "}) + "\n")
    with pytest.raises(BadInput, match=r"x.jsonl.gz:2: the review is empty"):
        load_imdb_jsonl(f)
    with gzip.open(f, "wt") as fh:
        fh.write(json.dumps({"id": "a", "label": 2, "text": "fine"}) + "\n")
    with pytest.raises(BadInput, match="label 2 is not 0 or 1"):
        load_imdb_jsonl(f)
