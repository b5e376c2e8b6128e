"""Faithfulness of stored explanations: ERASER comprehensiveness and sufficiency (AOPC).

For an explanation of model M on review x (predicted class c, p = M's probability of c):

* comprehensiveness_k = p(c | x) - p(c | x without its top-k% tokens)   (higher: more faithful)
* sufficiency_k       = p(c | x) - p(c | only its top-k% tokens)        (lower: more faithful)

"Top" ranks tokens by their attribution *towards the predicted class* (the stored values
explain the positive output, so for a negative prediction the most negative values come
first). k runs over ``FRACTIONS`` (1, 5, 10, 20% of the explained non-special tokens, at
least one token each), and each score is the mean over them (AOPC, DeYoung et al. 2020).

Removal: tokens are **deleted** from the input ids by default (as ERASER does; special
tokens stay), so no model sees a token it was not trained to see. ``removal="mask"``
replaces them with the tokenizer's mask token instead (the SHAP text masker's choice),
which keeps positions but needs a mask token. The choice is part of the stored settings.

Scores are computed with model calls (torch is imported inside the functions only), one
row per explanation written whole to the ``faithfulness`` table, and resumable: rows
already stored for the same explanation and settings are skipped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from engine.errors import BadInput
from engine.progress import NEVER, CancelToken, Progress, ProgressCallback, no_progress
from engine.provenance import settings_hash as _hash
from engine.provenance import versions
from engine.store import Store, now
from engine.truncation import kept_positions, pad_batch

if TYPE_CHECKING:  # pragma: no cover
    from engine.compare import MetricSummary
    from engine.models import LoadedModel

FRACTIONS: tuple[float, ...] = (0.01, 0.05, 0.10, 0.20)
Removal = Literal["delete", "mask"]
PredictProba = Callable[[Sequence[Sequence[int]]], Sequence[float]]
"""Input id sequences -> probability of the positive class, one per sequence."""


def faith_settings(fractions: Sequence[float] = FRACTIONS, removal: Removal = "delete") -> dict[str, Any]:
    return {"metric": "eraser-aopc", "fractions": [float(f) for f in fractions], "removal": removal,
            "target": "predicted-class probability"}


def faith_hash(fractions: Sequence[float] = FRACTIONS, removal: Removal = "delete") -> str:
    return _hash(faith_settings(fractions, removal))


@dataclass(frozen=True)
class FaithScore:
    comprehensiveness: float
    sufficiency: float
    by_fraction: list[dict[str, float]]   # fraction, k, comprehensiveness, sufficiency
    p_full: float                         # probability of the predicted class on the full input
    pred: int
    n_tokens: int                         # non-special tokens ranked


def ranked_tokens(values: Sequence[float], special: Sequence[bool], pred: int) -> list[int]:
    """Indices of non-special tokens, most important for the predicted class first (ties: earlier)."""
    sign = 1.0 if pred == 1 else -1.0
    idx = [i for i, s in enumerate(special) if not s]
    return sorted(idx, key=lambda i: (-sign * float(values[i]), i))


def erasure_scores(predict_proba: PredictProba, ids: Sequence[int], special: Sequence[bool],
                   values: Sequence[float], *, fractions: Sequence[float] = FRACTIONS,
                   removal: Removal = "delete", mask_id: int | None = None) -> FaithScore:
    """Comprehensiveness and sufficiency of one explanation (values aligned with ``ids``)."""
    if not (len(ids) == len(special) == len(values)):
        raise BadInput("ids, special flags and values must have the same length", "align them first")
    if removal == "mask" and mask_id is None:
        raise BadInput("removal='mask' needs the tokenizer's mask token", "use removal='delete'")
    n = sum(1 for s in special if not s)
    if n == 0:
        raise BadInput("the explanation has no non-special tokens", "nothing to remove")
    p_pos = float(predict_proba([list(ids)])[0])
    pred = int(p_pos >= 0.5)
    order = ranked_tokens(values, special, pred)

    def build(drop: set[int]) -> list[int]:
        if removal == "delete":
            return [t for i, t in enumerate(ids) if i not in drop]
        return [mask_id if i in drop else t for i, t in enumerate(ids)]  # type: ignore[misc]

    ks = [max(1, math.ceil(f * n)) for f in fractions]
    nonspecial = set(order)
    seqs: list[list[int]] = []
    for k in ks:
        top = set(order[:k])
        seqs.append(build(top))                 # without the top k: comprehensiveness
        seqs.append(build(nonspecial - top))    # only the top k: sufficiency
    uniq: dict[tuple[int, ...], int] = {}
    for s in seqs:
        uniq.setdefault(tuple(s), len(uniq))
    probs = list(predict_proba([list(s) for s in uniq]))
    p = [float(probs[uniq[tuple(s)]]) for s in seqs]
    pc = (lambda q: q) if pred == 1 else (lambda q: 1.0 - q)
    full = pc(p_pos)
    rows = []
    for j, (f, k) in enumerate(zip(fractions, ks)):
        rows.append({"fraction": float(f), "k": int(k), "comprehensiveness": full - pc(p[2 * j]),
                     "sufficiency": full - pc(p[2 * j + 1])})
    return FaithScore(float(np.mean([r["comprehensiveness"] for r in rows])),
                      float(np.mean([r["sufficiency"] for r in rows])), rows, full, pred, n)


def model_proba(loaded: "LoadedModel", batch_size: int = 32) -> PredictProba:
    """A PredictProba calling a loaded classifier (right padding, attention mask)."""

    batch_size = loaded.rows_per_call(batch_size)

    def proba(seqs: Sequence[Sequence[int]]) -> list[float]:
        import torch

        out: list[float] = []
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        res = [0.0] * len(seqs)
        with torch.inference_mode():
            for b in range(0, len(order), batch_size):
                idx = order[b:b + batch_size]
                ids, mask = pad_batch([seqs[i] for i in idx], loaded.tokenizer.pad_token_id)
                logits = loaded.model(input_ids=ids.to(loaded.device),
                                      attention_mask=mask.to(loaded.device)).logits.float()
                p = torch.softmax(logits, dim=-1)[:, loaded.positive_index].tolist()
                for r, i in enumerate(idx):
                    res[i] = float(p[r])
        out.extend(res)
        return out

    return proba


def explanation_inputs(tokenizer: Any, text: str, tokens: Sequence[dict[str, Any]],
                       truncation: str = "head") -> tuple[list[int], list[bool], list[float], int]:
    """Re-tokenize ``text`` as the explainer saw it and align the stored values to the ids.

    Truncates where and how the explanation was truncated (its non-special tokens plus the
    tokenizer's specials, cut by ``truncation``: engine.truncation). Tokens are matched by position when the
    counts and character spans agree, otherwise by character span; returns (ids, special
    flags, values, unmatched) where unmatched counts non-special ids without a stored value
    (given 0).
    """
    n_words = sum(1 for t in tokens if not t["special"])
    try:
        n_special = int(tokenizer.num_special_tokens_to_add(pair=False))
    except (AttributeError, TypeError):  # pragma: no cover - every transformers tokenizer has it
        n_special = sum(1 for t in tokens if t["special"])
    enc = tokenizer(text, truncation=False, return_offsets_mapping=True, return_special_tokens_mask=True,
                    verbose=False)
    keep = kept_positions([bool(s) for s in enc["special_tokens_mask"]], max(2, n_words + n_special), truncation)
    ids = [enc["input_ids"][i] for i in keep]
    special = [bool(enc["special_tokens_mask"][i]) for i in keep]
    offsets = [tuple(enc["offset_mapping"][i]) for i in keep]
    by_pos = sorted(tokens, key=lambda t: t["position"])
    if len(by_pos) == len(ids) and all(
            bool(t["special"]) == s and (s or (t["start"], t["end"]) == o) for t, s, o in zip(by_pos, special, offsets)):
        return ids, special, [0.0 if s else float(t["value"]) for t, s in zip(by_pos, special)], 0
    spans: dict[tuple[int, int], float] = {}
    for t in by_pos:
        if not t["special"]:
            spans[(t["start"], t["end"])] = spans.get((t["start"], t["end"]), 0.0) + float(t["value"])
    values, unmatched, used = [], 0, set()
    for s, o in zip(special, offsets):
        if s:
            values.append(0.0)
        elif o in spans and o not in used:
            values.append(spans[o])
            used.add(o)
        else:
            values.append(0.0)
            unmatched += 1
    return ids, special, values, unmatched


# -- store -----------------------------------------------------------------------------------

@dataclass
class FaithSummaryRun:
    """What :func:`faithfulness_sample` did for one model."""

    model: str
    computed: int = 0
    skipped: int = 0          # already stored
    missing: int = 0          # no stored explanation with these settings
    failed: int = 0           # tokens could not be aligned (tokenizer differs from the explainer's)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def missing_faithfulness(store: Store, model_id: str, settings_hash: str, review_ids: Sequence[str], *,
                         fractions: Sequence[float] = FRACTIONS, removal: Removal = "delete") -> list[str]:
    """Reviews with a stored explanation (model, settings) but no faithfulness row yet:
    what :func:`faithfulness_sample` would compute (for a job's "everything stored" check)."""
    fhash = _hash(faith_settings(fractions, removal))
    explained = {r[0] for r in store.conn.execute(
        "SELECT review_id FROM explanations WHERE model_id = ? AND settings_hash = ?", [model_id, settings_hash])}
    done = {r[0] for r in store.conn.execute(
        "SELECT e.review_id FROM faithfulness f JOIN explanations e ON e.id = f.explanation_id"
        " WHERE e.model_id = ? AND e.settings_hash = ? AND f.faith_hash = ?", [model_id, settings_hash, fhash])}
    return [r for r in review_ids if r in explained and r not in done]


def faithfulness_sample(store: Store, loaded: "LoadedModel", review_ids: Sequence[str], settings_hash: str, *,
                        fractions: Sequence[float] = FRACTIONS, removal: Removal = "delete", batch_size: int = 32,
                        on_progress: ProgressCallback = no_progress, cancel: CancelToken = NEVER) -> FaithSummaryRun:
    """Compute and store faithfulness for every stored explanation of ``loaded`` (with
    ``settings_hash``) of ``review_ids`` that has none yet with these settings."""
    fsettings = faith_settings(fractions, removal)
    fhash = _hash(fsettings)
    mask_id = getattr(loaded.tokenizer, "mask_token_id", None)
    if removal == "mask" and mask_id is None:
        raise BadInput(f"{loaded.name}'s tokenizer has no mask token", "use removal='delete'")
    expl = {r["review_id"]: r for r in store.db.query(
        "SELECT id, review_id, settings FROM explanations WHERE model_id = ? AND settings_hash = ?",
        [loaded.id, settings_hash])}
    done = {r[0] for r in store.conn.execute(
        "SELECT e.review_id FROM faithfulness f JOIN explanations e ON e.id = f.explanation_id"
        " WHERE e.model_id = ? AND e.settings_hash = ? AND f.faith_hash = ?", [loaded.id, settings_hash, fhash])}
    summary = FaithSummaryRun(loaded.name)
    todo = []
    for rid in review_ids:
        if rid not in expl:
            summary.missing += 1
        elif rid in done:
            summary.skipped += 1
        else:
            todo.append(rid)
    total = len(todo) + summary.skipped
    on_progress(Progress("faithfulness", f"{loaded.name}: {summary.skipped} stored, {len(todo)} to compute",
                         summary.skipped, total, loaded.name))
    proba = model_proba(loaded, batch_size)
    t0 = time.perf_counter()
    texts = store.reviews(todo)
    for rid in todo:
        cancel.check()
        tb = time.perf_counter()
        row = expl[rid]
        tokens = list(store.db.query(
            "SELECT position, token, start, end, value, special FROM attributions WHERE explanation_id = ?"
            " ORDER BY position", [row["id"]]))
        cut = json.loads(row["settings"] or "{}").get("truncation", "head")
        ids, special, values, unmatched = explanation_inputs(loaded.tokenizer, texts[rid]["text"], tokens, cut)
        n_ns = sum(1 for s in special if not s)
        if n_ns == 0 or unmatched > n_ns / 2:
            summary.failed += 1
            summary.warnings.append(f"{rid}: {unmatched} of {n_ns} tokens do not match the stored explanation")
            continue
        score = erasure_scores(proba, ids, special, values, fractions=fractions, removal=removal, mask_id=mask_id)
        rec = {
            "explanation_id": row["id"], "faith_hash": fhash, "model_id": loaded.id, "review_id": rid,
            "settings_hash": settings_hash, "settings": json.dumps(fsettings, sort_keys=True),
            "comprehensiveness": score.comprehensiveness, "sufficiency": score.sufficiency,
            "by_fraction": json.dumps(score.by_fraction), "p_full": score.p_full, "pred": score.pred,
            "n_tokens": score.n_tokens, "unmatched": unmatched, "device": str(loaded.device),
            "versions": json.dumps(versions(), sort_keys=True), "seconds": time.perf_counter() - tb,
            "created_at": now(),
        }
        with store.db.atomic():
            store.db["faithfulness"].upsert(rec, pk=("explanation_id", "faith_hash"))
        summary.computed += 1
        on_progress(Progress("faithfulness", f"{loaded.name}: faithfulness {summary.skipped + summary.computed}/{total}",
                             summary.skipped + summary.computed, total, loaded.name))
    summary.seconds = time.perf_counter() - t0
    return summary


def faithfulness_rows(store: Store, model_id: str, settings_hash: str, review_ids: Sequence[str] | None = None,
                      fhash: str | None = None) -> list[dict[str, Any]]:
    """Stored faithfulness rows of a model's explanations (default settings first; else the newest)."""
    rows = list(store.db.query(
        "SELECT * FROM faithfulness WHERE model_id = ? AND settings_hash = ? ORDER BY created_at",
        [model_id, settings_hash]))
    if review_ids is not None:
        wanted = set(review_ids)
        rows = [r for r in rows if r["review_id"] in wanted]
    if not rows:
        return []
    hashes = {r["faith_hash"] for r in rows}
    pick = fhash or (faith_hash() if faith_hash() in hashes else rows[-1]["faith_hash"])
    out = [dict(r) for r in rows if r["faith_hash"] == pick]
    for r in out:
        r["settings"] = json.loads(r["settings"])
        r["by_fraction"] = json.loads(r["by_fraction"])
    return out


@dataclass
class FaithfulnessSummary:
    """Faithfulness of one model over reviews: means with bootstrap CIs, per fraction too."""

    model: str
    n: int
    removal: str
    fractions: list[float]
    comprehensiveness: "MetricSummary"
    sufficiency: "MetricSummary"
    by_fraction: list[dict[str, Any]]     # fraction, comprehensiveness (mean), sufficiency (mean)

    def to_dict(self) -> dict[str, Any]:
        from engine.compare import json_safe

        return json_safe({"model": self.model, "n": self.n, "removal": self.removal, "fractions": self.fractions,
                          "comprehensiveness": self.comprehensiveness.to_dict(),
                          "sufficiency": self.sufficiency.to_dict(), "by_fraction": self.by_fraction})


def faithfulness_summary(store: Store, model_id: str, settings_hash: str, review_ids: Sequence[str] | None = None,
                         *, name: str = "", n_boot: int = 1000, seed: int = 0) -> FaithfulnessSummary | None:
    """The summary of stored faithfulness rows, or None when none are stored."""
    from engine.compare import summarize

    rows = faithfulness_rows(store, model_id, settings_hash, review_ids)
    if not rows:
        return None
    st = rows[0]["settings"]
    fr = [float(f) for f in st.get("fractions", [])]
    by = []
    for j, f in enumerate(fr):
        c = [r["by_fraction"][j]["comprehensiveness"] for r in rows if len(r["by_fraction"]) > j]
        s = [r["by_fraction"][j]["sufficiency"] for r in rows if len(r["by_fraction"]) > j]
        by.append({"fraction": f, "comprehensiveness": float(np.mean(c)) if c else None,
                   "sufficiency": float(np.mean(s)) if s else None})
    return FaithfulnessSummary(name or model_id, len(rows), st.get("removal", ""), fr,
                               summarize([r["comprehensiveness"] for r in rows], n_boot, seed),
                               summarize([r["sufficiency"] for r in rows], n_boot, seed), by)


def compute_faithfulness(store: Store, workspace: Any, experiment: str, models: Sequence[str] | None = None, *,
                         data_path: Any = None, fractions: Sequence[float] = FRACTIONS, removal: Removal = "delete",
                         on_progress: ProgressCallback = no_progress,
                         cancel: CancelToken = NEVER) -> list[FaithSummaryRun]:
    """Faithfulness for the explain sample of ``models`` (default: every model of the
    experiment) with the experiment's main explanation settings; loads each model.

    The models must be loadable here (their weights or zoo folders present); the demo
    workspace's synthetic models are not.
    """
    from engine.compare import experiment_preset
    from engine.config import parse_preset
    from engine.datasets import resolve_data_path
    from engine.jobs import explain_hash, load_model

    preset = parse_preset(experiment_preset(store, experiment), f"experiment {experiment}")
    stored = {m["name"]: m for m in store.experiment_models(experiment)}
    specs = {s.name: s for s in preset.models}
    names = list(models) if models is not None else [s.name for s in preset.models if s.name in stored]
    for n in names:
        if n not in specs:
            raise BadInput(f"no model named {n!r} in experiment {experiment!r}", f"use one of: {', '.join(specs)}")
        if stored.get(n, {}).get("kind") == "demo":
            raise BadInput(f"{n!r} is a synthetic demo model: it cannot be called",
                           "faithfulness needs real models; run `shapdiff run` with a preset first")
    dpath = resolve_data_path(data_path) if preset.data.dataset != "hf" else None
    shash = explain_hash(preset)
    ids = store.sample_ids(experiment, "explain")
    out = []
    for n in names:
        cancel.check()
        loaded = load_model(workspace, specs[n], preset, data_path=dpath, dtype=preset.explain.dtype,
                            on_progress=on_progress, cancel=cancel)
        out.append(faithfulness_sample(store, loaded, ids, shash, fractions=fractions, removal=removal,
                                       batch_size=preset.explain.batch_size, on_progress=on_progress, cancel=cancel))
    return out
