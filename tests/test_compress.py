"""Compression transforms on a tiny classifier: int8 and global magnitude pruning."""

from __future__ import annotations

import pytest
import torch

from engine.compress import apply_variant, encoder_linears, linear_sparsity, parse_variant
from engine.errors import BadInput
from engine.models import load_classifier

TEXTS = ["a wonderful, moving film with great acting", "dull plot and terrible dialogue, a waste",
         "it was fine I guess", "the best movie of the year"]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_classifier(str(tiny_model_dir), name="tiny", device="cpu")


def _logits(lm, texts=TEXTS):
    enc = lm.tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.inference_mode():
        return lm.model(**enc).logits.float()


def test_empty_variant_is_identity(loaded):
    assert apply_variant(loaded, "") is loaded


def test_int8_replaces_linears_and_stays_close(loaded):
    q = apply_variant(loaded, "int8")
    assert q.variant == "int8" and q.id != loaded.id
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    assert sum(isinstance(m, DynamicQuantizedLinear) for m in q.model.modules()) == 6 * 2 + 2
    assert not any(type(m) is torch.nn.Linear for m in q.model.modules())
    # the original is untouched
    assert any(type(m) is torch.nn.Linear for m in loaded.model.modules())
    ref, got = _logits(loaded), _logits(q)
    assert torch.allclose(ref, got, atol=0.05), (ref - got).abs().max()
    assert "per_channel" in q.card["variant"]["steps"]["int8"]["weights"]
    layer = q.model.bert.encoder.layer[0].attention.self.query
    assert layer.weight().qscheme() == torch.per_channel_affine
    assert torch.equal(ref.argmax(-1), got.argmax(-1))


@pytest.mark.parametrize("fraction", [0.3, 0.5])
def test_prune_zeroes_the_asked_fraction_globally(loaded, fraction):
    before = linear_sparsity(loaded.model)
    p = apply_variant(loaded, f"prune:{fraction}")
    assert p.variant == f"prune:{fraction}"
    assert linear_sparsity(p.model) == pytest.approx(fraction, abs=1e-4)
    assert linear_sparsity(loaded.model) == before  # copy, not in place
    # global: the smallest surviving magnitude is >= the largest pruned one across all layers
    kept, pruned = [], []
    for (_, m0), (_, m1) in zip(encoder_linears(loaded.model), encoder_linears(p.model)):
        w0, w1 = m0.weight.detach().abs(), m1.weight.detach()
        kept.append(w0[w1 != 0])
        pruned.append(w0[w1 == 0])
    assert torch.cat(kept).min() >= torch.cat(pruned).max()
    # the head is untouched
    assert torch.equal(p.model.classifier.weight, loaded.model.classifier.weight)
    assert p.card["variant"]["steps"][f"prune:{fraction:g}"]["n_zeroed"] > 0


def test_stacked_variant(loaded):
    p = apply_variant(loaded, "prune:0.3")
    q = apply_variant(p, "int8")
    assert q.variant == "prune:0.3+int8"
    assert len({loaded.id, p.id, q.id}) == 3


@pytest.mark.parametrize("bad", ["int4", "prune:1.5", "prune:0", "prune:abc", "prune"])
def test_bad_variants(loaded, bad):
    with pytest.raises(BadInput):
        apply_variant(loaded, bad)


def test_parse_variant():
    assert parse_variant("prune:0.3+int8") == [("prune", 0.3), ("int8", None)]
    assert parse_variant("") == []


def test_int8_results_do_not_depend_on_batch_company(loaded):
    """Dynamic int8 scales activations by the whole batch: the engine runs such a model one
    row at a time, so a review's prediction and an explanation's f(x) are functions of that
    review alone, and the explanation adds up."""
    from engine.config import ExplainSpec
    from engine.explain import Explainer
    from engine.predict import predict_texts

    q = apply_variant(loaded, "int8")
    assert not q.batch_invariant and q.rows_per_call(64) == 1 and loaded.rows_per_call(64) == 64
    loud = "AMAZING!!! " * 20 + "the best, the best, the best"
    alone = predict_texts(q, [TEXTS[0]], max_length=64)[0]
    crowd = predict_texts(q, [TEXTS[0], loud, TEXTS[1]], max_length=64, batch_size=8)[0]
    assert alone.logit_pos == crowd.logit_pos
    exp = Explainer(q, ExplainSpec(max_evals=80), max_length=64).explain_text(TEXTS[1])
    assert exp.additivity_error < 1e-4
    assert exp.fx == pytest.approx(predict_texts(q, [TEXTS[1]], max_length=64)[0].logit_pos, abs=1e-5)
