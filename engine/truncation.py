"""Which tokens of a long review a model sees: one rule for training, prediction and SHAP.

A review longer than ``max_length`` tokens (special tokens included) is cut. ``head``
keeps the first tokens, as a transformers pipeline does (``truncation=True``).
``head+tail`` keeps the first quarter of the budget and the last three quarters (Sun et
al. 2019, "How to Fine-Tune BERT for Text Classification": reviews often end with the
verdict). Special tokens at either end are always kept.

Predictions, explanations and faithfulness checks of one experiment must cut the same way,
or f(x) in an explanation would not be the stored prediction; they all call
:func:`kept_positions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

Truncation = Literal["head", "head+tail"]
TRUNCATIONS: tuple[str, ...] = ("head", "head+tail")


def kept_positions(special: Sequence[bool], max_length: int, how: str = "head") -> list[int]:
    """Positions (into the untruncated token list) that survive the cut.

    ``special`` flags the untruncated tokens; leading and trailing special tokens are kept,
    the body in between is cut to ``max_length`` minus their count.
    """
    if how not in TRUNCATIONS:
        raise ValueError(f"unknown truncation {how!r}; use one of {', '.join(TRUNCATIONS)}")
    n = len(special)
    if n <= max_length:
        return list(range(n))
    lead = 0
    while lead < n and special[lead]:
        lead += 1
    trail = 0
    while trail < n - lead and special[n - 1 - trail]:
        trail += 1
    budget = max(0, max_length - lead - trail)
    head = budget if how == "head" else budget // 4
    tail = budget - head
    body_end = n - trail
    return [*range(lead + head), *range(body_end - tail, n)]


def encode(tokenizer: Any, texts: Sequence[str], max_length: int, how: str = "head") -> list[tuple[list[int], int]]:
    """Token ids (special tokens included) of each text cut to ``max_length``, with the
    untruncated length: ``[(ids, n_total), ...]``."""
    enc = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False,
                    return_special_tokens_mask=True)
    out = []
    for ids, special in zip(enc["input_ids"], enc["special_tokens_mask"]):
        keep = kept_positions([bool(s) for s in special], max_length, how)
        out.append(([ids[i] for i in keep], len(ids)))
    return out


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int | None) -> tuple[Any, Any]:
    """(input_ids, attention_mask) tensors, right-padded to the longest sequence."""
    import torch

    width = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), int(pad_id) if pad_id is not None else 0, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, :len(s)] = 1
    return ids, mask
