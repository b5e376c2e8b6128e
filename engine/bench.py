"""`shapdiff bench shap`: the engine's explainer against shap's documented usage.

(a) baseline: ``shap.Explainer(f, shap.maskers.Text(tokenizer))`` with a plain
``f(list[str]) -> output`` that tokenizes the masked strings (padding to the longest in the
call, truncating to max_length) and runs the model in fp32 (``torch.no_grad``), as shap's
text examples do; (b) the engine (:mod:`engine.explain`). Both explain the same reviews
(cut to the same tokens), with the same max_evals, seed and explained output. Work is
interleaved review by review (order alternating) so load from other processes falls on
both sides alike.

Reported: reviews per second and per minute of each, their ratio, and per review the
Spearman correlation between (a)'s and (b)'s values on the review's non-special tokens
(aligned by character span), min and median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import ExplainSpec
from engine.errors import BadInput
from engine.explain import Explainer, output_transform, prepare_text
from engine.models import LoadedModel
from engine.progress import NEVER, CancelToken, Progress, ProgressCallback, no_progress


@dataclass
class BenchResult:
    model: str
    reviews: int
    max_evals: int
    max_length: int
    engine_dtype: str
    mean_tokens: float
    baseline_s: float               # total seconds, all reviews
    engine_s: float
    baseline_rps: float             # reviews per second
    engine_rps: float
    baseline_rpm: float             # reviews per minute
    engine_rpm: float
    ratio: float                    # engine_rps / baseline_rps
    min_spearman: float
    median_spearman: float
    spearman: list[float] = field(default_factory=list)
    per_review: list[dict[str, Any]] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.model}: {self.reviews} reviews, ~{self.mean_tokens:.0f} tokens, max_evals {self.max_evals}: "
                f"shap documented usage {self.baseline_rpm:.2f} reviews/min "
                f"({self.baseline_s / self.reviews:.2f} s/review), engine ({self.engine_dtype}) "
                f"{self.engine_rpm:.2f} reviews/min ({self.engine_s / self.reviews:.2f} s/review), "
                f"ratio {self.ratio:.2f}x; Spearman vs baseline min {self.min_spearman:.4f} "
                f"median {self.median_spearman:.4f}")


class DocumentedF:
    """shap's documented text usage: f(list of strings) -> the explained output (fp32)."""

    def __init__(self, loaded: LoadedModel, output: str, max_length: int) -> None:
        self.loaded = loaded
        self.output = output
        self.max_length = max_length

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        enc = self.loaded.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                    return_tensors="pt").to(self.loaded.device)
        with torch.no_grad():
            logits = self.loaded.model(**enc).logits.float().cpu().numpy()
        return output_transform(logits, self.loaded.positive_index, self.output)


def documented_shap_values(loaded: LoadedModel, text: str, *, max_evals: int, max_length: int,
                           output: str = "logit", seed: int = 0) -> dict[tuple[int, int], float]:
    """shap's documented usage on ``text``: values of non-special tokens keyed by character span."""
    import shap

    f = DocumentedF(loaded, output, max_length)
    explainer = shap.Explainer(f, shap.maskers.Text(loaded.tokenizer))
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        sv = explainer([text], max_evals=max_evals, silent=True)
    finally:
        np.random.set_state(state)
    enc = loaded.tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    vals = np.asarray(sv.values[0]).reshape(-1)
    if len(vals) != len(enc["input_ids"]):  # pragma: no cover - shap tokenizes the same way
        raise RuntimeError("shap's feature count differs from the tokenizer's")
    return {tuple(o): float(v) for o, v, s in zip(enc["offset_mapping"], vals, enc["special_tokens_mask"]) if not s}


def spearman(a: dict[tuple[int, int], float], b: dict[tuple[int, int], float]) -> float:
    """Spearman correlation over the spans both have (nan when fewer than 3)."""
    from scipy.stats import spearmanr

    keys = sorted(set(a) & set(b))
    if len(keys) < 3:
        return float("nan")
    x = [a[k] for k in keys]
    y = [b[k] for k in keys]
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 1.0 if np.allclose(x, y) else float("nan")
    return float(spearmanr(x, y).statistic)


def bench_shap(loaded: LoadedModel, texts: Sequence[str], *, max_evals: int = 500, max_length: int = 256,
               engine_dtype: str = "bf16", output: str = "logit", seed: int = 0, batch_size: int = 64,
               on_progress: ProgressCallback = no_progress, cancel: CancelToken = NEVER) -> BenchResult:
    """Time (a) shap's documented usage and (b) the engine on the same texts; compare values.

    ``loaded`` must be the fp32 model (the reference); the engine casts its own copy to
    ``engine_dtype``.
    """
    if loaded.dtype != "fp32":
        raise BadInput("the baseline must run the fp32 model", "load the model with dtype fp32")
    max_length = min(max_length, loaded.max_length)
    spec = ExplainSpec(mode="fast", max_evals=max_evals, output=output, seed=seed, dtype=engine_dtype,
                       batch_size=batch_size)
    engine = Explainer(loaded, spec, max_length=max_length)
    # warm both paths (first-call allocations, kernel selection) on a short text
    warm = "A short warm-up sentence, not timed."
    engine.explain_text(warm)
    documented_shap_values(loaded, warm, max_evals=20, max_length=max_length, output=output, seed=seed)
    tb = te = 0.0
    rhos: list[float] = []
    per: list[dict[str, Any]] = []
    ntok = []
    for i, text in enumerate(texts):
        cancel.check()
        prepared = prepare_text(loaded.tokenizer, text, max_length)
        ends = [e for (s, e), sp in zip(prepared.offsets, prepared.special) if not sp]
        cut = text[:ends[-1]] if prepared.truncated and ends else text
        ntok.append(len(prepared.ids))

        def run_base() -> tuple[dict, float]:
            t = time.perf_counter()
            vals = documented_shap_values(loaded, cut, max_evals=max_evals, max_length=max_length,
                                          output=output, seed=seed)
            return vals, time.perf_counter() - t

        def run_engine() -> tuple[dict, float]:
            t = time.perf_counter()
            exp = engine.explain_text(text)
            dt = time.perf_counter() - t
            return ({o: float(v) for o, v, s in zip(exp.prepared.offsets, exp.values, exp.prepared.special)
                     if not s}, dt)

        if i % 2 == 0:
            (bv, bt), (ev, et) = run_base(), run_engine()
        else:
            (ev, et), (bv, bt) = run_engine(), run_base()
        tb += bt
        te += et
        rho = spearman(bv, ev)
        rhos.append(rho)
        per.append({"tokens": len(prepared.ids), "baseline_s": round(bt, 3), "engine_s": round(et, 3),
                    "spearman": round(rho, 5)})
        on_progress(Progress("bench", f"review {i + 1}/{len(texts)}: {len(prepared.ids)} tokens, "
                             f"baseline {bt:.2f} s, engine {et:.2f} s, Spearman {rho:.4f}",
                             i + 1, len(texts), task=loaded.name))
    n = len(texts)
    finite = [r for r in rhos if r == r]
    return BenchResult(
        model=loaded.name, reviews=n, max_evals=max_evals, max_length=max_length,
        engine_dtype=engine.dtype, mean_tokens=float(np.mean(ntok)) if ntok else 0.0,
        baseline_s=tb, engine_s=te, baseline_rps=n / tb if tb else 0.0, engine_rps=n / te if te else 0.0,
        baseline_rpm=60 * n / tb if tb else 0.0, engine_rpm=60 * n / te if te else 0.0,
        ratio=(tb / te) if te else 0.0,
        min_spearman=min(finite) if finite else float("nan"),
        median_spearman=statistics.median(finite) if finite else float("nan"),
        spearman=[round(r, 5) for r in rhos], per_review=per,
    )


# -- CLI: shapdiff bench shap ------------------------------------------------------------------

def _bench_model(args: argparse.Namespace, on_progress: ProgressCallback) -> LoadedModel:
    """--model: a path or hub id, or a model name of the workspace's latest experiment
    (default: its reference model)."""
    from engine.models import load_classifier

    ref = args.model
    if ref and (Path(ref).expanduser().exists() or "/" in ref and not ref.startswith("zoo:")):
        return load_classifier(ref, dtype="fp32", max_length=args.max_length)
    from engine.config import load_preset
    from engine.jobs import load_model
    from engine.workspace import resolve_workspace

    ws = resolve_workspace(getattr(args, "workspace", None))
    preset = None
    if ws.db_path.exists():
        from engine.store import open_store

        with open_store(ws.db_path, readonly=True) as store:
            rows = store.experiments()
        if rows:
            from engine.config import parse_preset

            preset = parse_preset(json.loads(rows[0]["preset"]), "stored preset")
    preset = preset or load_preset(getattr(args, "preset", None))
    specs = {m.name: m for m in preset.models}
    spec = specs.get(ref) if ref else preset.reference
    if spec is None:
        raise BadInput(f"no model named {ref!r} in preset {preset.name!r}",
                       f"use one of {', '.join(specs)} or a model folder path")
    data_path = Path(args.data_path) if getattr(args, "data_path", None) else None
    return load_model(ws, spec, preset, data_path=data_path, dtype="fp32", on_progress=on_progress)


def _bench_texts(args: argparse.Namespace, n: int) -> list[str]:
    """n real reviews: the data folder's IMDB test reviews, a seeded shuffle."""
    from engine.config import DataSpec
    from engine.datasets import load_dataset, resolve_data_path

    data = load_dataset(DataSpec(), resolve_data_path(getattr(args, "data_path", None)))
    rng = np.random.default_rng(args.seed)
    idx = rng.permutation(len(data.reviews))[:n]
    return [data.reviews[int(i)].text for i in idx]


def cmd_bench_shap(args: argparse.Namespace) -> int:
    from engine.cli import progress_reporter

    with progress_reporter(args.quiet or args.json) as report:
        loaded = _bench_model(args, report)
        texts = _bench_texts(args, args.reviews)
        res = bench_shap(loaded, texts, max_evals=args.max_evals, max_length=args.max_length,
                         engine_dtype=args.dtype, output=args.output, seed=args.seed, on_progress=report)
    print(res.line())
    if args.json:
        print(json.dumps(asdict(res), sort_keys=True))
    return 0


def add_bench_parser(sub: Any, common: Any) -> None:
    """Register `shapdiff bench shap`."""
    p = sub.add_parser("bench", help="benchmarks (bench shap: the explainer vs shap's documented usage)")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCH_COMMAND")
    b = bsub.add_parser("shap", help="reviews/minute of shap's documented usage vs the engine, ratio, Spearman")
    common(b, data=True)
    b.add_argument("--model", help="model name in the workspace's experiment (default: its reference) "
                                   "or a model folder / hub id")
    b.add_argument("--preset", help="preset to take models from when the workspace has none (default offline)")
    b.add_argument("--reviews", type=int, default=5, help="number of IMDB test reviews (default 5)")
    b.add_argument("--max-evals", type=int, default=500)
    b.add_argument("--max-length", type=int, default=256)
    b.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16", help="the engine's dtype (default bf16)")
    b.add_argument("--output", choices=("logit", "log-odds", "probability"), default="logit")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", action="store_true", help="last line: one JSON object with the figures")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=cmd_bench_shap)

    def _usage(args: Any) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_usage)
