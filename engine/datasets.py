"""Review loaders (IMDB jsonl.gz and aclImdb folders, CSV, SST-2, rt-polarity, HF datasets)
and balanced, seeded sampling.

Every loader returns :class:`Review` objects with a dataset-qualified id, text with
``<br />`` turned into line breaks, and a label in {0, 1} (1 = positive). Malformed input
raises :class:`~engine.errors.BadInput` naming the file and line.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engine.errors import BadInput
from engine.workspace import PROJECT_ROOT, project_settings

_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
ENCODINGS = ("utf-8", "cp1252", "latin-1")


@dataclass(frozen=True)
class Review:
    id: str                # dataset-qualified, unique in the store: "imdb:test/pos/200_8"
    dataset: str
    split: str
    source_id: str
    text: str
    label: int
    rating: int | None = None
    encoding: str | None = None

    def row(self) -> dict:
        d = asdict(self)
        d["n_chars"] = len(self.text)
        return d


@dataclass(frozen=True)
class LoadedData:
    reviews: list[Review]
    source: str                    # where they came from
    encodings: dict[str, int]      # encoding -> number of lines decoded with it

    @property
    def encoding_note(self) -> str:
        return ", ".join(f"{n} lines {enc}" for enc, n in sorted(self.encodings.items()))


def clean_text(text: str) -> str:
    """``<br />`` tags become line breaks; nothing else is changed."""
    return _BR.sub("\n", text)


def _check_review(text: str, label: object, where: str) -> int:
    if not isinstance(text, str):
        raise BadInput(f"{where}: the review text is {type(text).__name__}, not a string",
                       "the text field must hold the review as a string")
    if "\x00" in text:
        raise BadInput(f"{where}: the review contains NUL bytes", "remove the NUL characters from that line")
    if not _BR.sub("", text).strip():  # only whitespace (or only <br /> tags)
        raise BadInput(f"{where}: the review is empty", "remove or fill in that line")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. "\ud800" escapes in JSON
        raise BadInput(f"{where}: the review holds invalid Unicode (an unpaired surrogate)",
                       "re-encode that review as valid UTF-8") from None
    try:
        lab = int(label)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadInput(f"{where}: label {label!r} is not 0 or 1", "labels must be 0 (negative) or 1 (positive)") from None
    if lab not in (0, 1) or str(label).strip() not in ("0", "1", "True", "False"):
        raise BadInput(f"{where}: label {label!r} is not 0 or 1", "labels must be 0 (negative) or 1 (positive)")
    return lab


# -- data path ------------------------------------------------------------------------

def resolve_data_path(flag: str | os.PathLike | None = None) -> Path:
    """--data-path, else SHAPDIFF_DATA, else the first existing folder of the project's
    data_search_path (data/settings.toml; includes ../shared/data)."""
    if flag:
        p = Path(flag).expanduser()
        if not p.is_dir():
            raise BadInput(f"data path {p} is not a folder", "pass --data-path DIR pointing at the data folder")
        return p.resolve()
    env = os.environ.get("SHAPDIFF_DATA")
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise BadInput(f"SHAPDIFF_DATA={env} is not a folder", "set SHAPDIFF_DATA to the data folder")
        return p.resolve()
    tried = []
    for entry in project_settings().get("data_search_path", ["../shared/data"]):
        p = Path(entry)
        p = p if p.is_absolute() else (PROJECT_ROOT / p)
        tried.append(str(p.resolve()))
        if p.is_dir():
            return p.resolve()
    raise BadInput("no data folder found (looked in: " + ", ".join(tried) + ")",
                   "pass --data-path DIR or set SHAPDIFF_DATA to the folder holding imdb/, sst2/, rt-polarity/")


def _resolve(base: Path, path: str | None, default: str) -> Path:
    p = Path(path) if path else Path(default)
    inside = Path(os.path.normpath(base / p))  # lexical: '..' and absolute paths cannot escape
    if p.is_absolute() or not inside.is_relative_to(Path(os.path.normpath(base))):
        raise BadInput(f"the preset's [data] path {path!r} leads outside the data folder {base}",
                       "give path relative to the data folder, or point --data-path at the folder holding the file")
    p = base / p
    if not p.exists():
        raise BadInput(f"no data at {p}", "check the data path (--data-path / SHAPDIFF_DATA) and the preset's [data] path")
    return p


# -- loaders --------------------------------------------------------------------------

def load_imdb_jsonl(path: Path, split: str = "test", dataset: str = "imdb") -> LoadedData:
    """gzip JSON lines: {"id": "test/pos/200_8", "rating": 8, "label": 1, "text": "..."}."""
    reviews = []
    encs: Counter = Counter()
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            for i, raw in enumerate(fh, 1):
                line, enc = decode_bytes(raw)  # line by line: a file may mix encodings
                if not line.strip():
                    continue
                where = f"{path}:{i}"
                try:
                    obj = json.loads(line)
                except (json.JSONDecodeError, RecursionError) as exc:
                    msg = getattr(exc, "msg", "nested too deeply")
                    raise BadInput(f"{where}: not a JSON line ({msg})",
                                   "the file must hold one JSON object a line") from None
                if not isinstance(obj, dict) or "text" not in obj or "label" not in obj:
                    raise BadInput(f"{where}: expected an object with 'text' and 'label'",
                                   "use the IMDB JSON-lines format: {\"id\", \"label\", \"text\", \"rating\"}")
                text = obj["text"]
                label = _check_review(text, obj["label"], where)
                sid = str(obj.get("id") or f"{split}/{i}")
                rating = obj.get("rating")
                rating = rating if isinstance(rating, int) and not isinstance(rating, bool) else None
                encs[enc] += 1
                reviews.append(Review(f"{dataset}:{sid}", dataset, split, sid, clean_text(text), label,
                                      rating, enc))
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise BadInput(f"no data at {path}", "check the data path") from None
        raise BadInput(f"{path} is not a readable gzip JSON-lines file ({type(exc).__name__}: {exc})",
                       "the file may be truncated or not gzip; re-download or re-create it") from None
    if not reviews:
        raise BadInput(f"{path} holds no reviews", "point the preset at a file with reviews")
    return _loaded(reviews, str(path), dict(encs))


def load_imdb_folder(root: Path, split: str = "test", dataset: str = "imdb") -> LoadedData:
    """The original aclImdb layout: ROOT/{train,test}/{pos,neg}/ID_RATING.txt."""
    base = root / split if (root / split).is_dir() else root
    reviews = []
    for polarity, label in (("neg", 0), ("pos", 1)):
        folder = base / polarity
        if not folder.is_dir():
            raise BadInput(f"{base} has no {polarity}/ folder", "use the aclImdb layout: SPLIT/{pos,neg}/ID_RATING.txt")
        for f in sorted(folder.glob("*.txt")):
            text, enc = decode_bytes(f.read_bytes())
            _check_review(text, label, str(f))
            m = re.fullmatch(r"(\d+)_(\d+)", f.stem)
            rating = int(m.group(2)) if m else None
            sid = f"{split}/{polarity}/{f.stem}"
            reviews.append(Review(f"{dataset}:{sid}", dataset, split, sid, clean_text(text), label, rating, enc))
    if not reviews:
        raise BadInput(f"no reviews under {base}", "use the aclImdb layout: SPLIT/{pos,neg}/ID_RATING.txt")
    return LoadedData(reviews, str(base), dict(Counter(r.encoding for r in reviews)))


def load_csv(path: Path, text_column: str = "text", label_column: str = "label",
             dataset: str = "csv", split: str = "all") -> LoadedData:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}", "check the file") from None
    lines, encs = [], Counter()
    for line in raw.splitlines():  # line by line: a file may mix encodings
        t, e = decode_bytes(line)
        lines.append(t)
        encs[e] += 1
    enc = encs.most_common(1)[0][0] if encs else "utf-8"
    csv.field_size_limit(2**31 - 1)  # a 100,000-character review is a review
    rows = csv.DictReader(lines)
    try:
        cols = rows.fieldnames or []
    except csv.Error as exc:
        raise BadInput(f"{path}: not a readable CSV file ({exc})", "check the file") from None
    missing = [c for c in (text_column, label_column) if c not in cols]
    if missing:
        raise BadInput(f"{path}: no column {', '.join(repr(c) for c in missing)} (columns: {cols})",
                       "set text_column / label_column in the preset's [data] section")
    reviews = []
    try:
        for i, row in enumerate(rows, 2):
            t = row[text_column] or ""
            label = _check_review(t, row[label_column], f"{path}: row {i - 1}")
            rid = row.get("id") or str(i - 1)
            reviews.append(Review(f"{dataset}:{split}/{rid}", dataset, split, f"{split}/{rid}", clean_text(t),
                                  label, None, enc))
    except csv.Error as exc:
        raise BadInput(f"{path}: not a readable CSV file ({exc})", "check the file") from None
    if not reviews:
        raise BadInput(f"{path} holds no rows", "add reviews to the CSV")
    return _loaded(reviews, str(path), dict(encs))


def load_sst2(path: Path, split: str = "dev", dataset: str = "sst2") -> LoadedData:
    """stsa.binary.* files: one 'LABEL SENTENCE' a line."""
    reviews = []
    encs: Counter = Counter()
    for i, raw in enumerate(path.read_bytes().splitlines(), 1):
        line, enc = decode_bytes(raw)
        if not line.strip():
            continue
        label, _, sentence = line.strip().partition(" ")
        where = f"{path}:{i}"
        if label not in ("0", "1"):
            raise BadInput(f"{where}: line does not start with a 0/1 label", "use the stsa.binary format 'LABEL SENTENCE'")
        _check_review(sentence, label, where)
        encs[enc] += 1
        reviews.append(Review(f"{dataset}:{split}/{i}", dataset, split, f"{split}/{i}", sentence, int(label), None, enc))
    if not reviews:
        raise BadInput(f"{path} holds no sentences", "check the file")
    return LoadedData(reviews, str(path), dict(encs))


def load_glue_sst2(path: Path, split: str = "dev", dataset: str = "sst2") -> LoadedData:
    """GLUE's SST-2 TSV: a header 'sentence<TAB>label', then one row a line."""
    text, enc = decode_bytes(path.read_bytes())
    lines = text.splitlines()
    if not lines or lines[0].strip().split("\t")[:2] != ["sentence", "label"]:
        raise BadInput(f"{path} is not GLUE SST-2 TSV (header must be 'sentence<TAB>label')", "check the file")
    reviews = []
    for i, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise BadInput(f"{path}:{i}: expected 'sentence<TAB>label'", "check the file")
        label = _check_review(parts[0], parts[1].strip(), f"{path}:{i}")
        reviews.append(Review(f"{dataset}:{split}/{i - 1}", dataset, split, f"{split}/{i - 1}", parts[0], label, None, enc))
    return LoadedData(reviews, str(path), {enc: len(reviews)})


def _loaded(reviews: list[Review], source: str, encodings: dict[str, int]) -> LoadedData:
    """The loaded data, after checking that review ids are unique (they key the store)."""
    seen: set[str] = set()
    for r in reviews:
        if r.id in seen:
            raise BadInput(f"{source}: the review id {r.source_id!r} appears more than once",
                           "give every review its own id")
        seen.add(r.id)
    return LoadedData(reviews, source, encodings)


def decode_bytes(raw: bytes) -> tuple[str, str]:
    """Decode as UTF-8 when valid, else Windows-1252, else Latin-1; returns (text, encoding)."""
    for enc in ENCODINGS:
        try:
            return raw.decode(enc), enc
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte string")  # pragma: no cover


def load_rt_polarity(folder: Path, dataset: str = "rt-polarity") -> LoadedData:
    """rt-polarity.{pos,neg}: one snippet a line, not UTF-8 (decoded line by line)."""
    reviews = []
    encs: Counter = Counter()
    for polarity, label in (("neg", 0), ("pos", 1)):
        f = folder / f"rt-polarity.{polarity}"
        if not f.exists():
            raise BadInput(f"no {f}", "the rt-polarity folder must hold rt-polarity.pos and rt-polarity.neg")
        for i, raw in enumerate(f.read_bytes().splitlines(), 1):
            text, enc = decode_bytes(raw)
            if not text.strip():
                continue
            _check_review(text, label, f"{f}:{i}")
            encs[enc] += 1
            sid = f"{polarity}/{i}"
            reviews.append(Review(f"{dataset}:{sid}", dataset, "all", sid, text.strip(), label, None, enc))
    return LoadedData(reviews, str(folder), dict(encs))


def load_hf(name: str = "imdb", split: str = "test") -> LoadedData:
    """A Hugging Face dataset with 'text' and 'label' columns (needs the hub or its cache)."""
    try:
        import datasets
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:
        raise BadInput(f"cannot load the Hugging Face dataset {name!r} ({type(exc).__name__})",
                       "offline, use dataset = \"imdb\" with a local data path instead") from None
    reviews = []
    for i, row in enumerate(ds):
        text = str(row["text"])
        label = _check_review(text, row["label"], f"{name}[{split}][{i}]")
        reviews.append(Review(f"hf-{name}:{split}/{i}", f"hf-{name}", split, f"{split}/{i}", clean_text(text), label, None, "utf-8"))
    return LoadedData(reviews, f"hf:{name}", {"utf-8": len(reviews)})


def load_dataset(spec, data_path: Path | None = None) -> LoadedData:
    """Load the reviews a preset's [data] section (engine.config.DataSpec) names."""
    kind = spec.dataset
    if kind == "hf":
        return load_hf(spec.hf_name, spec.split)
    base = data_path or resolve_data_path(None)
    try:
        return _load_local(spec, kind, base)
    except OSError as exc:  # a folder where a file belongs, unreadable files
        raise BadInput(f"cannot read the {kind} data at {exc.filename or base}: {exc.strerror or exc}",
                       "check the preset's [data] path and the data folder") from None


def _load_local(spec, kind: str, base: Path) -> LoadedData:
    if kind == "imdb":
        p = _resolve(base, spec.path, f"imdb/{spec.split}.jsonl.gz")
        return load_imdb_folder(p, spec.split) if p.is_dir() else load_imdb_jsonl(p, spec.split)
    if kind == "imdb-folder":
        return load_imdb_folder(_resolve(base, spec.path, "aclImdb"), spec.split)
    if kind == "csv":
        return load_csv(_resolve(base, spec.path, "reviews.csv"), spec.text_column, spec.label_column, split=spec.split)
    if kind == "sst2":
        return load_sst2(_resolve(base, spec.path, f"sst2/stsa.binary.{spec.split}"), spec.split)
    if kind == "glue-sst2":
        return load_glue_sst2(_resolve(base, spec.path, f"SST-2/{spec.split}.tsv"), spec.split)
    if kind == "rt-polarity":
        return load_rt_polarity(_resolve(base, spec.path, "rt-polarity"))
    raise BadInput(f"unknown dataset {kind!r}", "use imdb, imdb-folder, csv, sst2, glue-sst2, rt-polarity or hf")


def dataset_key(spec) -> str:
    return f"{spec.dataset}:{spec.split}" + (f":{spec.path}" if spec.path else "")


# -- sampling -------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    metrics: list[Review]     # the metrics sample, negatives and positives alternating
    explain: list[Review]     # its first explain_n reviews: a balanced subset


def balanced_sample(reviews: Sequence[Review], n: int, explain_n: int, seed: int) -> Sample:
    """A balanced, seeded sample: the same seed gives the same reviews on every machine.

    Reviews are ordered by id, each class is permuted with numpy's PCG64 generator, and
    the two classes alternate (negative first), so every prefix is balanced; the explain
    sample is the first ``explain_n`` reviews of the metrics sample.
    """
    by_class = {0: sorted((r for r in reviews if r.label == 0), key=lambda r: r.id),
                1: sorted((r for r in reviews if r.label == 1), key=lambda r: r.id)}
    need = {0: n - n // 2, 1: n // 2}
    for lab, name in ((0, "negative"), (1, "positive")):
        if len(by_class[lab]) < need[lab]:
            raise BadInput(f"asked for {n} reviews ({need[lab]} {name}) but the data has only "
                           f"{len(by_class[lab])} {name}", "lower metrics_n (--metrics-n) or use more data")
    rng = np.random.Generator(np.random.PCG64(seed))
    picked = {lab: [by_class[lab][i] for i in rng.permutation(len(by_class[lab]))[:need[lab]]] for lab in (0, 1)}
    order: list[Review] = []
    for i in range(need[0]):
        order.append(picked[0][i])
        if i < need[1]:
            order.append(picked[1][i])
    return Sample(order, order[:explain_n])


def iter_texts(reviews: Sequence[Review]) -> Iterator[str]:
    for r in reviews:
        yield r.text
