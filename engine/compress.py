"""Compression transforms that work on any loaded classifier.

A variant spec is ``""`` (unchanged), ``"int8"`` (dynamic int8 quantization of every
``nn.Linear``, CPU only), ``"prune:F"`` (global unstructured magnitude pruning of a
fraction ``F`` of the encoder's Linear weights), or several joined by ``+`` applied left
to right (``"prune:0.3+int8"``). The transforms copy the model; the input is untouched.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import Any

from engine.errors import BadInput
from engine.models import LoadedModel

_HINT = "use '', 'int8', 'prune:FRACTION' (e.g. prune:0.3), or several joined by '+'"


def parse_variant(variant: str) -> list[tuple[str, float | None]]:
    """``"prune:0.3+int8"`` -> ``[("prune", 0.3), ("int8", None)]``; a clear error otherwise."""
    steps: list[tuple[str, float | None]] = []
    spec = (variant or "").strip()
    if not spec:
        return steps
    for part in spec.split("+"):
        part = part.strip()
        if part == "int8":
            steps.append(("int8", None))
        elif part.startswith("prune:"):
            raw = part.split(":", 1)[1]
            try:
                frac = float(raw)
            except ValueError:
                raise BadInput(f"bad prune fraction {raw!r} in variant {variant!r}", _HINT) from None
            if not 0.0 < frac < 1.0:
                raise BadInput(f"prune fraction must be between 0 and 1 (exclusive), got {frac}",
                               "use e.g. prune:0.3 to zero 30% of the encoder weights")
            steps.append(("prune", frac))
        else:
            raise BadInput(f"unknown variant {part!r}", _HINT)
    return steps


def encoder_linears(model: Any) -> list[tuple[str, Any]]:
    """The Linear layers of the encoder body: inside ``model.base_model``, minus the pooler
    and embeddings (the classification head stays dense)."""
    import torch.nn as nn

    base = getattr(model, "base_model", model)
    out = []
    for name, mod in base.named_modules():
        if isinstance(mod, nn.Linear) and "pooler" not in name and "embed" not in name:
            out.append((name, mod))
    return out


def magnitude_prune_(model: Any, fraction: float) -> dict[str, float]:
    """Zero the ``fraction`` of encoder Linear weights with the smallest magnitude, globally
    across layers (exactly round(fraction * N) of them; ties broken by position). In place."""
    import torch

    layers = encoder_linears(model)
    if not layers:
        raise BadInput("the model has no encoder Linear layers to prune",
                       "pruning works on transformer classifiers (BERT, DistilBERT, RoBERTa, ...)")
    with torch.no_grad():
        flat = torch.cat([m.weight.detach().abs().float().reshape(-1) for _, m in layers])
        n = flat.numel()
        k = int(round(fraction * n))
        if k <= 0:
            return {"fraction": 0.0, "n_weights": float(n), "n_zeroed": 0.0}
        thr = torch.kthvalue(flat, k).values
        below = flat < thr
        ties_needed = k - int(below.sum())
        if ties_needed > 0:  # several weights equal to the threshold: take the first ones
            tie_idx = torch.nonzero(flat == thr, as_tuple=False).reshape(-1)[:ties_needed]
            below[tie_idx] = True
        offset = 0
        for _, m in layers:
            size = m.weight.numel()
            mask = below[offset:offset + size].reshape(m.weight.shape)
            m.weight.masked_fill_(mask, 0.0)
            offset += size
    return {"fraction": k / n, "n_weights": float(n), "n_zeroed": float(k)}


INT8_QSCHEME = "per_channel"


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantization of every Linear, in place: weights int8 with one scale per
    output channel, activations quantized on the fly. (One scale per tensor cost the zoo
    teacher 3 points of IMDB accuracy; per channel, none.)"""
    import torch
    import torch.nn as nn
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    model = model.to("cpu").float().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def linear_sparsity(model: Any) -> float:
    """The fraction of zeros among the encoder Linear weights (0.0 for a dense model)."""
    layers = encoder_linears(model)
    total = sum(m.weight.numel() for _, m in layers)
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    return zeros / total if total else 0.0


def apply_variant(loaded: LoadedModel, variant: str) -> LoadedModel:
    """A new LoadedModel with ``variant`` applied to a copy of the model.

    Its ``.variant`` records the full spec (stacked on any variant the input already had),
    so its id differs from the input's. ``""`` returns the input unchanged.
    """
    steps = parse_variant(variant)
    if not steps:
        return loaded
    if any(kind == "int8" for kind, _ in steps) and loaded.device != "cpu":
        raise BadInput(f"int8 dynamic quantization runs on the CPU only (model {loaded.name} is on "
                       f"{loaded.device})", "set device = \"cpu\" for this model in the preset")
    model = copy.deepcopy(loaded.model)
    notes: dict[str, Any] = {}
    dtype = loaded.dtype
    for kind, arg in steps:
        if kind == "prune":
            notes[f"prune:{arg:g}"] = magnitude_prune_(model, float(arg))
        else:
            model = quantize_int8(model)
            notes["int8"] = {"weights": f"qint8 {INT8_QSCHEME}", "activations": "dynamic, one scale per input (run one row at a time)",
                             "modules": "every nn.Linear"}
            dtype = "fp32"  # activations stay fp32 around the int8 matmuls
    model.eval()
    full = "+".join(v for v in (loaded.variant, variant.strip()) if v)
    card = dict(loaded.card or {})
    card["variant"] = {"spec": full, "steps": notes}
    return dataclasses.replace(loaded, model=model, variant=full, dtype=dtype, card=card)
