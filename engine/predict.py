"""Batched inference with length bucketing; stores whole prediction rows in batches."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from engine.models import LoadedModel
from engine.progress import NEVER, CancelToken, Progress, ProgressCallback, no_progress
from engine.provenance import settings_hash, versions
from engine.store import Store, now
from engine.truncation import encode, pad_batch

WRITE_EVERY = 64  # reviews per write transaction


@dataclass(frozen=True)
class Prediction:
    logit_neg: float
    logit_pos: float
    p_pos: float
    pred: int
    n_tokens: int      # tokens the model saw (specials included, after truncation)
    truncated: bool    # the review was longer than max_length tokens


@dataclass(frozen=True)
class PredictSummary:
    model: str
    computed: int
    skipped: int
    seconds: float


def predict_settings(max_length: int, dtype: str, truncation: str = "head") -> dict:
    """The settings that change predicted values (batch size does not: padding is masked).

    ``truncation`` appears only when it is not the default ``head``, so rows stored before
    it existed keep their key."""
    settings = {"max_length": int(max_length), "dtype": dtype}
    if truncation != "head":
        settings["truncation"] = truncation
    return settings


def predict_texts(loaded: LoadedModel, texts: Sequence[str], *, max_length: int | None = None,
                  truncation: str = "head", batch_size: int = 32,
                  cancel: CancelToken = NEVER) -> list[Prediction]:
    """Predict in length-sorted batches (little padding); results in input order."""
    import torch

    tok = loaded.tokenizer
    ml = min(max_length or loaded.max_length, loaded.max_length)
    encoded = encode(tok, texts, ml, truncation)
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i][0]))
    out: list[Prediction | None] = [None] * len(texts)
    pos = loaded.positive_index
    batch_size = loaded.rows_per_call(batch_size)
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            cancel.check()
            idx = order[b:b + batch_size]
            ids, mask = pad_batch([encoded[i][0] for i in idx], tok.pad_token_id)
            logits = loaded.model(input_ids=ids.to(loaded.device),
                                  attention_mask=mask.to(loaded.device)).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            for j, i in enumerate(idx):
                lp = logits[j, pos].item()
                ln = logits[j, 1 - pos].item() if logits.shape[1] == 2 else float("nan")
                p = math.exp(logp[j, pos].item())
                kept, total = encoded[i]
                out[i] = Prediction(ln, lp, p, int(p >= 0.5), len(kept), total > len(kept))
    return out  # type: ignore[return-value]


def predict_missing(store: Store, loaded: LoadedModel, review_ids: Sequence[str], *,
                    max_length: int, truncation: str = "head", batch_size: int = 32,
                    on_progress: ProgressCallback = no_progress,
                    cancel: CancelToken = NEVER) -> PredictSummary:
    """Predict every review that has no stored prediction for this model and settings."""
    settings = predict_settings(max_length, loaded.dtype, truncation)
    shash = settings_hash(settings)
    done = store.predicted_ids(loaded.id, shash)
    todo = [r for r in review_ids if r not in done]
    total = len(review_ids)
    on_progress(Progress("predict", f"{loaded.name}: {len(done)} stored, {len(todo)} to predict",
                         len(done), total, loaded.name))
    t0 = time.perf_counter()
    computed = 0
    for b in range(0, len(todo), WRITE_EVERY):
        cancel.check()
        ids = todo[b:b + WRITE_EVERY]
        texts = store.reviews(ids)
        tb = time.perf_counter()
        preds = predict_texts(loaded, [texts[i]["text"] for i in ids], max_length=max_length,
                              truncation=truncation, batch_size=batch_size, cancel=cancel)
        per = (time.perf_counter() - tb) / max(1, len(ids))
        rows = [{
            "model_id": loaded.id, "review_id": rid, "settings_hash": shash, "settings": settings,
            "logit_neg": p.logit_neg, "logit_pos": p.logit_pos, "p_pos": p.p_pos, "pred": p.pred,
            "n_tokens": p.n_tokens, "truncated": int(p.truncated), "device": loaded.device,
            "versions": versions(), "seconds": per, "created_at": now(),
        } for rid, p in zip(ids, preds)]
        store.put_predictions(rows)
        computed += len(ids)
        elapsed = time.perf_counter() - t0
        eta = elapsed / computed * (len(todo) - computed)
        on_progress(Progress("predict", f"{loaded.name}: predicted {len(done) + computed}/{total}",
                             len(done) + computed, total, loaded.name, {"eta_s": eta}))
    return PredictSummary(loaded.name, computed, len(done), time.perf_counter() - t0)
