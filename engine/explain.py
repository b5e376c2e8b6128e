"""SHAP token attributions: shap's Partition explainer, fed a fast model function.

What is explained is the same for every model: by default the positive-class logit
(``output = "logit"``); ``"log-odds"`` is logit_pos - logit_neg (logit_pos minus the
log-sum-exp of the others for more than two outputs); ``"probability"`` the softmax
probability of the positive class (saturates: prefer logits).

The algorithm is shap's own ``PartitionExplainer.explain_row`` (the Owen-value recursion
with its priority queue, budget and batch handling are shap's code, unchanged). What is
ours is the masker and the model function it calls:

* The masker masks in token-id space: a masked token is replaced by the tokenizer's mask
  token id (``[MASK]``; tokenizers without one use the id of ``"..."``, as shap's Text
  masker does). Every masked variant of a review therefore has the review's length: no
  re-tokenizing strings, no padding, no attention mask; rows go straight to the model.
* Special tokens ([CLS], [SEP], <s>, </s>) are leaves of the hierarchy, as in shap's Text
  masker (so the hierarchy is shap's), but never masked. shap's final step spreads an
  unexpanded cluster's credit evenly over its leaves, specials included; here it is spread
  over the cluster's real tokens only (:func:`lower_credit`), so specials carry exactly
  zero and the values still sum to f(x) - base. They are stored flagged ``special = 1``.
* The feature hierarchy is shap's Text-masker clustering (the same tree), built with
  an incremental version of shap's ``partition_tree`` (identical output, O(M) per merge).
* The model runs under ``torch.inference_mode`` in the spec's dtype. bf16 weights roughly
  double the forward's throughput on this AVX512-BF16 CPU (no AMX), but in fast mode they
  also move values more than their logit error suggests: when the budget runs out, which
  clusters get expanded depends on the order of the priority queue, which small changes
  of f reorder (measured: per-review Spearman vs fp32 shap 0.95-0.998; fp32: 0.9995).
* BERT classifiers run the last layer for the [CLS] row only (:class:`BertClsForward`),
  an exact shortcut checked against the model's own forward before use.

Modes
-----
``fast``: shap's defaults: ``fixed_context=None`` (Owen values), ``max_evals`` from the spec
(500), shap's Text batch size (5), which fixes the order in which the queue is expanded.
When the budget runs out, unexpanded clusters share their credit evenly (flat blocks).

``full``: ``fixed_context=1`` with a budget of ``2 * M`` evaluations for ``M`` tokens
(``2 (M - 1)`` for the ``M - 1`` clusters, plus the unmasked and fully masked inputs). That
budget always expands the whole hierarchy down to single tokens, so there are no flat
blocks, at a cost linear in the review's length (about the fast budget at 250 tokens). Each
cluster's split is evaluated with its sibling present (the rest of the review unmasked).
Because the hierarchy completes, the queue order does not matter, so full mode batches
``spec.batch_size`` masks per model call.

Storage: one explanations row per (model, review, settings hash) and one attributions row
per token, written in one transaction by :meth:`engine.store.Store.put_explanation`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import ExplainSpec
from engine.errors import BadInput
from engine.models import LoadedModel
from engine.progress import NEVER, CancelToken, Progress, ProgressCallback, no_progress
from engine.provenance import settings_hash, versions
from engine.truncation import kept_positions

ALGORITHM = "partition"
MASKER = "text-token-ids"          # shap Text-masker tokens, masked in id space, specials excluded
IMPLEMENTATION = "shapdiff-ids-1"  # bump when the explainer's numbers could change
SHAP_TEXT_BATCH = 5                # shap.maskers.Text.default_batch_size: shap's queue order
ADDITIVITY_TOL = 1e-3              # |sum(values) - (f(x) - base)| above this is a warning
OUTPUTS = ("logit", "log-odds", "probability")


# -- settings ----------------------------------------------------------------------------

def explain_settings(spec: ExplainSpec, max_length: int, truncation: str = "head") -> dict[str, Any]:
    """The settings that decide an explanation's values; their hash keys stored results.

    ``max_length`` is the requested token limit (the model's own limit may be lower; that
    is a property of the model, whose id is part of the key too); ``truncation`` how a
    longer review is cut (engine.truncation), recorded only when not the default ``head``
    so that explanations stored before it existed keep their key.
    """
    fast = spec.mode == "fast"
    settings = {
        "algorithm": ALGORITHM,
        "implementation": IMPLEMENTATION,
        "mode": spec.mode,
        "max_evals": spec.max_evals if fast else "2*M",
        "fixed_context": None if fast else 1,
        "partition_batch": SHAP_TEXT_BATCH if fast else "any",
        "masker": MASKER,
        "mask_token": "tokenizer mask token, else '...'",
        "output": spec.output,
        "max_length": int(max_length),
        "seed": spec.seed,
        "dtype": spec.dtype,
    }
    if truncation != "head":
        settings["truncation"] = truncation
    return settings


def full_mode_budget(n_features: int) -> int:
    """Evaluations that complete the hierarchy with a fixed context: 2 (M - 1) + 2."""
    return max(2, 2 * n_features)


# -- token preparation -------------------------------------------------------------------

@dataclass
class PreparedText:
    """A review tokenized (and truncated) the way the explainer sees it."""

    text: str
    ids: np.ndarray                 # all token ids, specials included, after truncation
    offsets: list[tuple[int, int]]  # character spans in ``text``
    tokens: list[str]               # token strings
    special: np.ndarray             # bool per token
    truncated: bool
    tokens_total: int               # tokens (specials included) before truncation
    segments: list[str] = field(default_factory=list)  # shap's token segments (for clustering)
    truncation: str = "head"        # how a longer text was cut (engine.truncation)

    @property
    def feature_index(self) -> np.ndarray:
        return np.flatnonzero(~self.special)

    @property
    def n_features(self) -> int:
        return int((~self.special).sum())


def prepare_text(tokenizer: Any, text: str, max_length: int, truncation: str = "head") -> PreparedText:
    """Tokenize with character offsets, cut to ``max_length`` tokens the way predictions
    are (engine.truncation; recorded)."""
    if not getattr(tokenizer, "is_fast", False):
        raise BadInput(f"the tokenizer {type(tokenizer).__name__} gives no character offsets",
                       "use a model folder with a fast tokenizer (tokenizer.json)")
    enc = tokenizer(text, truncation=False, return_offsets_mapping=True, return_special_tokens_mask=True,
                    verbose=False)
    total = len(enc["input_ids"])
    keep = kept_positions([bool(x) for x in enc["special_tokens_mask"]], max_length, truncation)
    all_ids = enc["input_ids"]
    ids = np.asarray([all_ids[i] for i in keep], dtype=np.int64)
    offsets = [(0, 0) if o is None else (int(o[0]), int(o[1])) for o in (enc["offset_mapping"][i] for i in keep)]
    special = np.asarray([enc["special_tokens_mask"][i] for i in keep], dtype=bool)
    tokens = tokenizer.convert_ids_to_tokens([all_ids[i] for i in keep])
    # shap's Text.token_segments: each token's substring up to the next token's start
    # (a token before a truncation gap keeps only its own span)
    segs = [text[offsets[i][0]:max(offsets[i][1], offsets[i + 1][0]) if keep[i + 1] == keep[i] + 1
                 else offsets[i][1]] for i in range(len(offsets) - 1)]
    if offsets:
        segs.append(text[offsets[-1][0]:offsets[-1][1]])
    return PreparedText(text=text, ids=ids, offsets=offsets, tokens=list(tokens), special=special,
                        truncated=total > len(ids), tokens_total=total, segments=segs, truncation=truncation)


def mask_token_id(tokenizer: Any) -> tuple[int, str]:
    """The id replacing masked tokens and its text: shap Text-masker's choice."""
    if getattr(tokenizer, "mask_token", None) is not None and tokenizer.mask_token_id is not None:
        return int(tokenizer.mask_token_id), str(tokenizer.mask_token)
    null = tokenizer("")["input_ids"]
    keep_prefix = len(null) // 2 if len(null) != 1 else (
        1 if tokenizer.decode(null[0]) == getattr(tokenizer, "bos_token", None) else 0)
    return int(tokenizer("...")["input_ids"][keep_prefix]), "..."


# -- clustering: shap's Text-masker partition tree, built incrementally --------------------

def _cluster_tokens(segments: Sequence[str]) -> list[str]:
    """shap.maskers.Text.clustering's token strings ('##' marks a word continuation)."""
    import re

    space_end = re.compile(r"^.*\W$")
    letter_start = re.compile(r"^[A-Za-z]")
    out: list[str] = []
    for i, v in enumerate(segments):
        if i > 0 and space_end.match(segments[i - 1]) is None and letter_start.match(v) is not None \
                and out[i - 1] != "":
            out.append("##" + v.strip())
        else:
            out.append(v.strip())
    return out


def partition_tree(decoded_tokens: Sequence[str], special_tokens: Sequence[str] = ()) -> np.ndarray:
    """shap.maskers._text.partition_tree with incremental merge scores (same result).

    shap recomputes every adjacent pair's score after each merge (O(M^2) per review); a
    merge only changes the scores next to the merged group, so only those are recomputed.
    """
    from shap.maskers._text import Token, TokenGroup, merge_score, openers

    groups = [TokenGroup([Token(t)], i) for i, t in enumerate(decoded_tokens)]
    M = len(decoded_tokens)
    clustm = np.zeros((max(M - 1, 0), 4))
    scores = [merge_score(groups[i], groups[i + 1], special_tokens) for i in range(M - 1)]
    new_index = M
    for _ in range(M - 1):
        ind = int(np.argmax(scores))
        best = scores[ind]
        lind, rind = groups[ind].index, groups[ind + 1].index
        row = new_index - M
        clustm[row, 0], clustm[row, 1], clustm[row, 2] = lind, rind, -best
        clustm[row, 3] = (clustm[lind - M, 3] if lind >= M else 1) + (clustm[rind - M, 3] if rind >= M else 1)
        right = groups[ind + 1]
        groups[ind] = groups[ind] + right
        groups[ind].index = new_index
        if groups[ind][0].s in openers and right[-1].s == openers[groups[ind][0].s]:
            groups[ind][0].balanced = True
            right[-1].balanced = True
        groups.pop(ind + 1)
        scores.pop(ind)
        if ind > 0:
            scores[ind - 1] = merge_score(groups[ind - 1], groups[ind], special_tokens)
        if ind < len(groups) - 1:
            scores[ind] = merge_score(groups[ind], groups[ind + 1], special_tokens)
        new_index += 1
    clustm[:, 2] = clustm[:, 2] + 10
    return clustm


def text_clustering(prepared: PreparedText, sep_token: str | None = None) -> np.ndarray:
    """shap Text-masker clustering of the review's tokens (specials included, as shap does)."""
    pt = partition_tree(_cluster_tokens(prepared.segments), [sep_token] if sep_token else [])
    if len(pt):
        pt[:, 2] = pt[:, 3]
        pt[:, 2] /= pt[:, 2].max()
    return pt


# -- the masker and the model function -------------------------------------------------------

class IdMasker:
    """A shap masker over one prepared review, masking in token-id space.

    The features are the review's tokens, specials included, exactly as in shap's Text
    masker (so the hierarchy is shap's); special tokens are never masked (shap keeps them
    too) and are declared invariant, so shap skips re-evaluating rows that differ only
    there. ``masker(mask, x)`` returns one row of token ids with masked tokens replaced by
    the mask token id.
    """

    default_batch_size = SHAP_TEXT_BATCH
    fixed_background = False
    immutable_outputs = True
    text_data = True

    def __init__(self, prepared: PreparedText, mask_id: int, sep_token: str | None = None) -> None:
        self.prepared = prepared
        self.mask_id = mask_id
        self.ids = prepared.ids
        self.special = prepared.special
        self.masked_row = np.where(prepared.special, prepared.ids, mask_id)
        self._clustering = text_clustering(prepared, sep_token)

    def __call__(self, mask: Any, *args: Any) -> tuple[np.ndarray]:
        if mask is True or mask is False:
            mask = np.full(len(self.ids), bool(mask))
        return (np.where(mask, self.ids, self.masked_row)[None, :],)

    def shape(self, *args: Any) -> tuple[int, int]:
        return (1, len(self.ids))

    def mask_shapes(self, *args: Any) -> list[tuple[int]]:
        return [(len(self.ids),)]

    def invariants(self, *args: Any) -> np.ndarray:
        return self.special.reshape(1, -1).copy()

    def clustering(self, *args: Any) -> np.ndarray:
        return self._clustering

    def feature_names(self, *args: Any) -> list[list[str]]:
        return [list(self.prepared.tokens)]


def lower_credit(dvalues: np.ndarray, clustering: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Push the hierarchy's values down to the leaves, splitting by leaf weight.

    shap.explainers._partition.lower_credit splits an unexpanded cluster's credit by leaf
    count; here a never-masked token (special) weighs 0, so it gets no credit and its share
    goes to the cluster's real tokens. A cluster of specials only has value 0 (masking it
    changes nothing). Additivity is kept: the leaves sum to the root's total.
    """
    M = len(weights)
    n = len(dvalues)
    w = np.zeros(n)
    w[:M] = weights
    for k in range(len(clustering)):
        w[M + k] = w[int(clustering[k, 0])] + w[int(clustering[k, 1])]
    vals = np.array(dvalues, dtype=np.float64)
    for i in range(n - 1, M - 1, -1):  # parents have larger indexes than their children
        li, ri = int(clustering[i - M, 0]), int(clustering[i - M, 1])
        if w[i] > 0:
            vals[li] += vals[i] * w[li] / w[i]
            vals[ri] += vals[i] * w[ri] / w[i]
    out = vals[:M].copy()
    out[weights == 0] = 0.0
    return out


def output_transform(logits: np.ndarray, positive_index: int, output: str) -> np.ndarray:
    """The explained scalar per row from raw logits (float64)."""
    logits = np.asarray(logits, dtype=np.float64)
    pos = logits[:, positive_index]
    if output == "logit":
        return pos
    others = np.delete(logits, positive_index, axis=1)
    if output == "log-odds":
        m = others.max(axis=1, keepdims=True)
        return pos - (m[:, 0] + np.log(np.exp(others - m).sum(axis=1)))
    if output == "probability":
        m = logits.max(axis=1, keepdims=True)
        e = np.exp(logits - m)
        return e[:, positive_index] / e.sum(axis=1)
    raise BadInput(f"unknown output {output!r}", f"use one of {', '.join(OUTPUTS)}")


def runtime_model(loaded: LoadedModel, dtype: str) -> tuple[Any, str]:
    """The model in the requested dtype (a cast copy when needed) and the dtype actually used.

    Quantized models (int8) keep their own arithmetic: they are returned as they are.
    """
    import torch

    model = loaded.model
    if dtype == loaded.dtype:
        return model, dtype
    params = list(model.parameters())
    if not params or any(not p.dtype.is_floating_point for p in params) or _is_quantized(model):
        return model, loaded.dtype
    target = torch.bfloat16 if dtype == "bf16" else torch.float32
    return copy.deepcopy(model).to(target).eval(), dtype


def _is_quantized(model: Any) -> bool:
    return any("quantized" in type(m).__module__ for m in model.modules())


class BertClsForward:
    """An exact shortcut for BERT-architecture classifiers (BERT, MiniLM and their students).

    The classifier reads only the [CLS] row of the last layer, so the last layer needs
    keys and values for every token but queries, attention output and feed-forward for
    that one row. Everything else is the model's own modules (quantized or pruned ones
    too). Saves about 1/7 of the work of a 6-layer model. Used only after
    :func:`check_forward` finds it equal to the model's own forward.
    """

    name = "bert-cls-last-layer"

    def __init__(self, model: Any) -> None:
        bert = model.bert
        self.embeddings, self.layers = bert.embeddings, bert.encoder.layer
        self.pooler, self.classifier = bert.pooler, model.classifier
        sa = self.layers[-1].attention.self
        self.heads, self.head_size, self.scaling = sa.num_attention_heads, sa.attention_head_size, sa.scaling

    @staticmethod
    def supports(model: Any) -> bool:
        bert = getattr(model, "bert", None)
        return (type(model).__name__ == "BertForSequenceClassification" and bert is not None
                and getattr(bert, "pooler", None) is not None and not model.config.is_decoder
                and getattr(model.config, "_attn_implementation", "sdpa") in ("sdpa", "eager")
                and getattr(model.config, "position_embedding_type", "absolute") == "absolute")

    def __call__(self, input_ids: Any) -> Any:
        import torch.nn.functional as F

        h = self.embeddings(input_ids=input_ids)
        for layer in self.layers[:-1]:
            out = layer(h)
            h = out[0] if isinstance(out, tuple) else out
        last = self.layers[-1]
        sa = last.attention.self
        b, n, _ = h.shape
        q = sa.query(h[:, :1]).view(b, 1, self.heads, self.head_size).transpose(1, 2)
        k = sa.key(h).view(b, n, self.heads, self.head_size).transpose(1, 2)
        v = sa.value(h).view(b, n, self.heads, self.head_size).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, scale=self.scaling)
        a = a.transpose(1, 2).reshape(b, 1, self.heads * self.head_size)
        a = last.attention.output(a, h[:, :1])
        h0 = last.output(last.intermediate(a), a)
        return self.classifier(self.pooler(h0))


def check_forward(model: Any, fast: Callable[[Any], Any], vocab_size: int, tol: float) -> bool:
    """Does ``fast(ids)`` give the model's logits on a few random rows (within ``tol``)?"""
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, max(1001, min(vocab_size, 20000)), (3, 37), generator=g)
    with torch.inference_mode():
        want = model(input_ids=ids).logits.float()
        try:
            got = fast(ids).float()
        except Exception:  # noqa: BLE001 - any mismatch in module layout: use the model's forward
            return False
    return got.shape == want.shape and bool((got - want).abs().max() <= tol * max(1.0, float(want.abs().max())))


class ModelFunction:
    """f(token-id rows) -> explained output, for rows that all have the same length.

    Rows go to the model as one tensor (no padding, no attention mask), in chunks of
    ``batch_size``, under ``torch.inference_mode``. ``calls`` and ``rows`` count the work.
    """

    def __init__(self, model: Any, positive_index: int, output: str, *, batch_size: int = 64,
                 device: str = "cpu", shortcut: bool = True) -> None:
        import torch

        self.model = model
        self.forward_name = "model"
        self._forward: Callable[[Any], Any] = lambda ids: model(input_ids=ids).logits
        if shortcut and BertClsForward.supports(model):
            fast = BertClsForward(model)
            low = any(p.dtype != torch.float32 for p in model.parameters())
            if check_forward(model, fast, model.config.vocab_size, 0.05 if low else 1e-4):
                self._forward, self.forward_name = fast, fast.name
        self.positive_index = positive_index
        self.output = output
        self.batch_size = batch_size
        self.device = device
        self.calls = 0
        self.rows = 0

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        import torch

        ids = np.asarray(ids)
        if ids.ndim == 1:
            ids = ids[None, :]
        out = []
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)).to(self.device)
            for i in range(0, len(t), self.batch_size):
                chunk = t[i:i + self.batch_size]
                logits = self._forward(chunk)
                out.append(logits.float().cpu().numpy())
                self.calls += 1
                self.rows += len(chunk)
        return output_transform(np.concatenate(out), self.positive_index, self.output)


# -- explaining one text -----------------------------------------------------------------------

@dataclass
class TextExplanation:
    """The numbers of one explanation before storage."""

    prepared: PreparedText
    values: np.ndarray        # one value per token (specials: 0)
    base_value: float
    fx: float
    evals_used: int
    max_evals: int
    complete: bool            # the hierarchy was expanded down to single tokens
    seconds: float

    @property
    def additivity_error(self) -> float:
        return float(abs(self.values.sum() - (self.fx - self.base_value)))


def explain_prepared(prepared: PreparedText, model_fn: Callable[[np.ndarray], np.ndarray], *,
                     mask_id: int, mode: str = "fast", max_evals: int = 500, seed: int = 0,
                     batch_size: int = 64, sep_token: str | None = None) -> TextExplanation:
    """Run shap's Partition explainer on one prepared review with ``model_fn``."""
    import shap

    t0 = time.perf_counter()
    M = len(prepared.ids)
    values = np.zeros(M)
    if prepared.n_features <= 1:
        # one real token (or none): its value is f(x) - f(masked), exactly
        rows = np.stack([np.where(prepared.special, prepared.ids, mask_id), prepared.ids])
        f00, f11 = (float(v) for v in model_fn(rows))
        values[prepared.feature_index] = f11 - f00
        return TextExplanation(prepared, values, f00, f11, 2, 2, True, time.perf_counter() - t0)
    masker = IdMasker(prepared, mask_id, sep_token)
    if mode == "fast":
        budget, fixed_context, pbatch = max_evals, None, SHAP_TEXT_BATCH
    elif mode == "full":
        budget, fixed_context, pbatch = full_mode_budget(M), 1, max(2, batch_size)
    else:
        raise BadInput(f"unknown explain mode {mode!r}", "use 'fast' or 'full'")
    calls: list[np.ndarray] = []

    def recording_fn(ids: np.ndarray) -> np.ndarray:
        out = model_fn(ids)
        if len(calls) < 2:  # explain_row's first two calls: all masked, then none masked
            calls.append(np.asarray(out, dtype=np.float64).reshape(-1))
        return out

    explainer = shap.explainers.PartitionExplainer(recording_fn, masker)
    state = np.random.get_state()
    np.random.seed(seed)  # shap breaks priority ties with np.random.randn
    try:
        res = explainer.explain_row(prepared.ids, max_evals=budget, main_effects=False, error_bounds=False,
                                    batch_size=pbatch, outputs=None, silent=True, fixed_context=fixed_context)
    finally:
        np.random.set_state(state)
    values = lower_credit(np.asarray(res["hierarchical_values"], dtype=np.float64).reshape(-1),
                          res["clustering"], (~prepared.special).astype(np.float64))
    base = float(np.asarray(res["expected_values"]).reshape(-1)[0])
    fx = float(calls[1][0])
    used = int(explainer.last_eval_count) + 2
    complete = used - 2 >= 2 * (M - 1) if fixed_context is not None else used < budget
    return TextExplanation(prepared, values, base, fx, used, budget, bool(complete),
                           time.perf_counter() - t0)


# -- rows for the store --------------------------------------------------------------------------

def token_rows(exp: TextExplanation) -> list[dict[str, Any]]:
    p = exp.prepared
    return [{"position": i, "token": p.tokens[i], "start": p.offsets[i][0], "end": p.offsets[i][1],
             "value": float(exp.values[i]), "special": int(p.special[i])} for i in range(len(p.ids))]


def explanation_row(exp: TextExplanation, *, model_id: str, review_id: str, settings: dict[str, Any],
                    shash: str, output: str, device: str) -> dict[str, Any]:
    err = exp.additivity_error
    tol = ADDITIVITY_TOL * max(1.0, abs(exp.fx - exp.base_value))
    warnings = []
    if err > tol:
        warnings.append(f"additivity error {err:.2g} exceeds tolerance {tol:.2g}")
    p = exp.prepared
    if p.truncated:
        kept = "the first and last ones" if p.truncation == "head+tail" else "the first ones"
        warnings.append(f"truncated: explained {len(p.ids)} of {p.tokens_total} tokens ({kept})")
    # an exhausted budget (flat blocks) is normal in fast mode: recorded in `complete` and
    # `budget_per_token`, not a warning
    return {
        "model_id": model_id, "review_id": review_id, "settings_hash": shash, "settings": settings,
        "output": output, "base_value": exp.base_value, "fx": exp.fx, "additivity_error": err,
        "additivity_ok": int(err <= tol), "max_evals": exp.max_evals, "evals_used": exp.evals_used,
        "n_tokens": len(p.ids), "truncated": int(p.truncated), "warning": "; ".join(warnings) or None,
        "device": device, "versions": versions(), "seconds": round(exp.seconds, 4),
        "tokens_total": p.tokens_total, "budget_per_token": exp.max_evals / max(p.n_features, 1),
        "complete": int(exp.complete),
    }


# -- the engine's entry points ----------------------------------------------------------------

@dataclass
class ExplainSummary:
    computed: int
    skipped: int
    seconds: float


class Explainer:
    """Everything needed to explain reviews with one model under one spec."""

    def __init__(self, loaded: LoadedModel, spec: ExplainSpec, *, max_length: int,
                 truncation: str = "head") -> None:
        self.loaded = loaded
        self.spec = spec
        self.truncation = truncation
        self.requested_max_length = int(max_length)
        self.max_length = int(min(max_length, loaded.max_length))
        model, self.dtype = runtime_model(loaded, spec.dtype)
        self.model_fn = ModelFunction(model, loaded.positive_index, spec.output,
                                      batch_size=loaded.rows_per_call(spec.batch_size), device=loaded.device)
        self.mask_id, self.mask_token = mask_token_id(loaded.tokenizer)
        self.sep_token = getattr(loaded.tokenizer, "sep_token", None)
        base = explain_settings(spec, max_length, truncation)
        self.settings_hash = settings_hash(base)
        self.settings = base | {
            "mask_token": self.mask_token, "mask_token_id": self.mask_id, "batch_size": spec.batch_size,
            "rows_per_call": loaded.rows_per_call(spec.batch_size),
            "effective_max_length": self.max_length, "runtime_dtype": self.dtype,
            "max_evals_rule": ("fixed" if spec.mode == "fast"
                               else "2*M: fixed_context=1 expands all M-1 clusters (2 evals each) + 2"),
            "baseline": "all features masked (specials kept)",
            "forward": self.model_fn.forward_name,
        }

    def explain_text(self, text: str) -> TextExplanation:
        prepared = prepare_text(self.loaded.tokenizer, text, self.max_length, self.truncation)
        return explain_prepared(prepared, self.model_fn, mask_id=self.mask_id, mode=self.spec.mode,
                                max_evals=self.spec.max_evals, seed=self.spec.seed,
                                batch_size=self.spec.batch_size, sep_token=self.sep_token)

    def explain_and_store(self, store: Any, review: dict[str, Any]) -> int:
        exp = self.explain_text(review["text"])
        row = explanation_row(exp, model_id=self.loaded.id, review_id=review["id"], settings=self.settings,
                              shash=self.settings_hash, output=self.spec.output, device=self.loaded.device)
        return store.put_explanation(row, token_rows(exp))


def explain_sample(store: Any, loaded: LoadedModel, review_ids: list[str], spec: ExplainSpec, *,
                   max_length: int, truncation: str = "head", on_progress: ProgressCallback = no_progress,
                   cancel: CancelToken = NEVER) -> ExplainSummary:
    """Explain every review of ``review_ids`` not yet stored for (model, settings).

    Each explanation is stored whole (one transaction) as soon as it is computed, so a run
    stopped at any moment keeps what it finished and a rerun does only the rest. ``cancel``
    is checked between reviews.
    """
    t0 = time.perf_counter()
    ex = Explainer(loaded, spec, max_length=max_length, truncation=truncation)
    done_ids = store.explained_ids(loaded.id, ex.settings_hash)
    todo = [r for r in dict.fromkeys(review_ids) if r not in done_ids]
    skipped = len(set(review_ids)) - len(todo)
    rows = store.reviews(todo)
    missing = [r for r in todo if r not in rows]
    if missing:
        raise BadInput(f"{len(missing)} review(s) to explain are not in the store (e.g. {missing[0]!r})",
                       "store the sample first (shapdiff run does)")
    total = len(todo)
    name = loaded.name
    on_progress(Progress("explain", f"{name}: {total} to explain, {skipped} stored", 0, total, task=name))
    spent = 0.0
    for i, rid in enumerate(todo):
        cancel.check()
        t = time.perf_counter()
        ex.explain_and_store(store, rows[rid])
        spent += time.perf_counter() - t
        eta = spent / (i + 1) * (total - i - 1)
        on_progress(Progress("explain", f"{name}: explained {i + 1}/{total}", i + 1, total, task=name,
                             info={"seconds": spent, "eta_s": eta, "s_per_review": spent / (i + 1)}))
    return ExplainSummary(total, skipped, time.perf_counter() - t0)


def explain_review(store: Any, loaded: LoadedModel, review_id: str, spec: ExplainSpec, *,
                   max_length: int, truncation: str = "head", on_progress: ProgressCallback = no_progress,
                   cancel: CancelToken = NEVER, force: bool = True) -> dict[str, Any]:
    """Explain one stored review (replacing a stored explanation of the same settings unless
    ``force`` is False) and return the stored explanation with its tokens."""
    review = store.review(review_id)
    if review is None:
        raise BadInput(f"no review {review_id!r} in this workspace",
                       "use an id the browser or `shapdiff run` shows (they look like imdb:test/pos/200_8)")
    cancel.check()
    ex = Explainer(loaded, spec, max_length=max_length, truncation=truncation)
    if force or review_id not in store.explained_ids(loaded.id, ex.settings_hash):
        on_progress(Progress("explain", f"{loaded.name}: explaining {review_id}", 0, 1, task=loaded.name))
        ex.explain_and_store(store, review)
        on_progress(Progress("explain", f"{loaded.name}: explained {review_id}", 1, 1, task=loaded.name))
    return store.explanation(loaded.id, review_id, ex.settings_hash)


recompute_review = explain_review


def explanation_words(explanation: dict[str, Any], text: str | None = None) -> list[Any]:
    """Word view of a stored explanation (``store.explanation(...)``): token values summed
    per word by character offsets (see :mod:`engine.words`)."""
    from engine.words import explanation_words as _words

    return _words(explanation["tokens"], text)


# -- CLI: shapdiff explain --------------------------------------------------------------------

def cmd_explain(args: Any) -> int:
    """`shapdiff explain --workspace DIR --model NAME --review ID`: explain one review."""
    import json

    from engine.cli import print_json, progress_reporter
    from engine.config import parse_preset
    from engine.jobs import load_model, require_experiment
    from engine.store import open_store
    from engine.workspace import resolve_workspace
    from engine.words import explanation_words as words_of

    ws = resolve_workspace(args.workspace)
    if not ws.db_path.exists():
        raise BadInput(f"no results in {ws.root} (no shapdiff.db)",
                       "run `shapdiff run` first, or pass --workspace DIR of an earlier run")
    with open_store(ws.db_path) as store, progress_reporter(args.quiet or args.json) as report:
        exp = require_experiment(store, args.experiment)
        row = next(e for e in store.experiments() if e["name"] == exp)
        preset = parse_preset(json.loads(row["preset"]), f"experiment {exp}")
        specs = {m.name: m for m in preset.models}
        spec = specs.get(args.model) if args.model else preset.reference
        if spec is None:
            raise BadInput(f"no model named {args.model!r} in experiment {exp!r}", f"use one of {', '.join(specs)}")
        review = store.review(args.review)
        if review is None:
            raise BadInput(f"no review {args.review!r} in this workspace",
                           "use an id the browser shows (e.g. imdb:test/pos/200_8)")
        data_path = Path(args.data_path) if args.data_path else None
        loaded = load_model(ws, spec, preset, data_path=data_path, dtype=preset.explain.dtype, on_progress=report)
        store.upsert_model(loaded.store_row())
        max_length = preset.explain.max_length or preset.predict.max_length
        e = explain_review(store, loaded, args.review, preset.explain, max_length=max_length,
                           truncation=preset.predict.truncation, on_progress=report, force=args.force)
    words = words_of(e["tokens"], review["text"])
    if args.json:
        print_json({k: v for k, v in e.items() if k != "tokens"} | {
            "model": spec.name, "tokens": e["tokens"],
            "words": [{"start": w.start, "end": w.end, "word": w.text, "value": w.value, "n_tokens": w.n_tokens}
                      for w in words]})
        return 0
    print(f"{spec.name} on {args.review}: f(x) {e['fx']:+.4f}, base {e['base_value']:+.4f} ({e['output']}), "
          f"{e['n_tokens']} tokens{' (truncated)' if e['truncated'] else ''}, {e['evals_used']} evaluations, "
          f"additivity error {e['additivity_error']:.2g}, {e['seconds']:.1f} s")
    if e.get("warning"):
        print(f"warning: {e['warning']}")
    top = sorted(words, key=lambda w: -abs(w.value))[:args.top]
    for w in top:
        print(f"  {w.value:+.4f}  {w.text!r}")
    return 0


def add_explain_parser(sub: Any, common: Any) -> None:
    """Register `shapdiff explain`."""
    p = sub.add_parser("explain", help="explain one review with one model (the experiment's settings)")
    common(p, data=True)
    p.add_argument("--model", help="model name in the experiment (default: the reference)")
    p.add_argument("--review", required=True, help="review id, e.g. imdb:test/pos/200_8")
    p.add_argument("--experiment", help="experiment (preset) name; default: the latest")
    p.add_argument("--force", action="store_true", help="recompute even when stored")
    p.add_argument("--top", type=int, default=10, help="words to list (default 10)")
    p.add_argument("--json", action="store_true", help="the stored explanation, its tokens and words as JSON")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_explain)
