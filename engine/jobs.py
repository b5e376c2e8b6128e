"""The pipeline: preset -> reviews -> models -> predictions -> explanations.

Idempotent (stored results are reused when everything that produced them matches),
resumable (each result is written whole, so a killed run continues where it stopped),
cancellable (a CancelToken checked between units) and reporting through a callback.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import ModelSpec, Preset
from engine.datasets import balanced_sample, dataset_key, load_dataset, resolve_data_path
from engine.errors import BadInput
from engine.models import LoadedModel, content_hash, load_classifier, model_id
from engine.predict import predict_missing, predict_settings
from engine.progress import NEVER, CancelToken, Progress, ProgressCallback, no_progress
from engine.provenance import settings_hash
from engine.store import Store, open_store
from engine.workspace import Workspace


@dataclass
class ModelSummary:
    name: str
    model_id: str = ""
    predicted: int = 0
    prediction_reused: int = 0
    explained: int = 0
    explanation_reused: int = 0
    faithfulness: int = 0


@dataclass
class RunSummary:
    experiment: str
    reviews: int
    explain_reviews: int
    models: list[ModelSummary] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def computed(self) -> int:
        return sum(m.predicted + m.explained + m.faithfulness for m in self.models)


def with_overrides(preset: Preset, metrics_n: int | None = None, explain_n: int | None = None,
                   seed: int | None = None) -> Preset:
    """The preset with command-line sample overrides applied (and validated)."""
    from engine.config import parse_preset

    data = preset.to_dict()
    if metrics_n is not None:
        data["sample"]["metrics_n"] = metrics_n
    if explain_n is not None:
        data["sample"]["explain_n"] = explain_n
    if seed is not None:
        data["sample"]["seed"] = seed
    return parse_preset(data, f"{preset.name} with command-line overrides")


def model_folder(workspace: Workspace, spec: ModelSpec, data_path: Path | None,
                 on_progress: ProgressCallback = no_progress, cancel: CancelToken = NEVER) -> tuple[str, str]:
    """(folder or hub id to load, kind) for a model spec; zoo models are built if missing."""
    if spec.source.startswith("zoo:"):
        from engine import zoo

        recipe = spec.source.removeprefix("zoo:")
        folder = zoo.ensure_model(workspace, recipe, data_path=data_path, on_progress=on_progress, cancel=cancel)
        if zoo.built_folder(workspace, recipe) != Path(folder):
            # a folder without its card was never finished (an interrupted copy or build): never use it
            raise BadInput(f"the zoo model folder {folder} is incomplete (no card.json): it was not built whole",
                           f"delete {folder} and run again; it will be rebuilt")
        return str(folder), "zoo"
    return spec.source, ""


def load_model(workspace: Workspace, spec: ModelSpec, preset: Preset, *, data_path: Path | None = None,
               dtype: str | None = None, on_progress: ProgressCallback = no_progress,
               cancel: CancelToken = NEVER) -> LoadedModel:
    """Resolve, load and transform (variant) one model of a preset."""
    source, kind = model_folder(workspace, spec, data_path, on_progress, cancel)
    on_progress(Progress("models", f"loading {spec.name}", task=spec.name))
    loaded = load_classifier(
        source, name=spec.name, kind=kind or None, device=preset.predict.device,
        dtype=dtype or preset.predict.dtype, positive_label=spec.positive_label,
        trust_remote_code=spec.trust_remote_code, allow_pickle=spec.allow_pickle,
    )
    if kind == "zoo":
        loaded.source = spec.source
        card = Path(source) / "card.json"
        if card.exists():
            import json
            loaded.card = json.loads(card.read_text())
    if spec.variant:
        from engine.compress import apply_variant

        loaded = apply_variant(loaded, spec.variant)
        loaded.name = spec.name
    return loaded


def explain_hash(preset: Preset, seed: int | None = None) -> str:
    """The settings hash of the preset's explanations; with ``seed`` equal to the preset's
    noise_seed, the noise-floor re-explanation's (its own seed and budget)."""
    if seed is None:
        spec = preset.explain
    elif seed == preset.explain.noise_seed:
        spec = preset.explain.noise_spec()
    else:
        spec = preset.explain.model_copy(update={"seed": seed})
    max_length = preset.explain.max_length or preset.predict.max_length
    try:
        from engine.explain import explain_settings
    except ImportError:  # explainer not built yet: a stable stand-in
        return settings_hash(spec.model_dump(mode="json") | {"max_length": max_length})
    return settings_hash(explain_settings(spec, max_length, preset.predict.truncation))


def _stored_id(workspace: Workspace, spec: ModelSpec, data_path: Path | None) -> str | None:
    """The model id without loading weights, when its folder is already local."""
    if spec.source.startswith("zoo:"):
        from engine import zoo

        folder = zoo.built_folder(workspace, spec.source.removeprefix("zoo:"))
        if folder is None:
            return None
    else:
        folder = Path(spec.source).expanduser()
        if not (folder / "config.json").exists():
            return None
    return model_id(content_hash(folder), spec.variant)


def run_experiment(preset: Preset, workspace: Workspace, *, data_path: str | Path | None = None,
                   explain: bool = True, on_progress: ProgressCallback = no_progress,
                   cancel: CancelToken = NEVER) -> RunSummary:
    """Compute whatever the preset needs that is not stored yet."""
    t0 = time.perf_counter()
    workspace.ensure()
    dpath = resolve_data_path(data_path) if preset.data.dataset != "hf" else None
    on_progress(Progress("data", f"loading {dataset_key(preset.data)}"))
    data = load_dataset(preset.data, dpath)
    sample = balanced_sample(data.reviews, preset.sample.metrics_n, preset.sample.explain_n, preset.sample.seed)
    metric_ids = [r.id for r in sample.metrics]
    explain_ids = [r.id for r in sample.explain]
    on_progress(Progress("data", f"{len(metric_ids)} reviews sampled ({data.encoding_note})",
                         len(metric_ids), len(metric_ids)))
    store = open_store(workspace.db_path)
    try:
        store.put_experiment(preset.name, preset.to_dict(), preset.hash(), dataset_key(preset.data),
                             preset.sample.seed, preset.sample.metrics_n, preset.sample.explain_n)
        store.put_sample(preset.name, [r.row() for r in sample.metrics], explain_ids)
        summary = RunSummary(preset.name, len(metric_ids), len(explain_ids))
        entries = []
        max_length = preset.predict.max_length
        ex_len = preset.explain.max_length or max_length
        p_hash = settings_hash(predict_settings(max_length, preset.predict.dtype, preset.predict.truncation))
        for spec in preset.models:
            cancel.check()
            ms = ModelSummary(spec.name)
            summary.models.append(ms)
            e_hashes = []
            if explain and explain_ids:
                e_hashes.append(explain_hash(preset))
                if spec.role == "reference" and preset.explain.noise_seed is not None:
                    e_hashes.append(explain_hash(preset, preset.explain.noise_seed))
            mid = _stored_id(workspace, spec, dpath)
            if mid and store.model(mid):
                missing_pred = set(metric_ids) - store.predicted_ids(mid, p_hash)
                missing_expl = any(set(explain_ids) - store.explained_ids(mid, h) for h in e_hashes)
                if e_hashes and not missing_expl:
                    from engine.faithfulness import missing_faithfulness

                    missing_expl = bool(missing_faithfulness(store, mid, e_hashes[0], explain_ids))
                if not missing_pred and not missing_expl:
                    ms.model_id = mid
                    ms.prediction_reused = len(metric_ids)
                    ms.explanation_reused = len(explain_ids) * len(e_hashes)
                    entries.append({"name": spec.name, "model_id": mid, "role": spec.role})
                    on_progress(Progress("models", f"{spec.name}: everything stored", task=spec.name))
                    continue
            loaded = load_model(workspace, spec, preset, data_path=dpath, on_progress=on_progress, cancel=cancel)
            store.upsert_model(loaded.store_row())
            ms.model_id = loaded.id
            entries.append({"name": spec.name, "model_id": loaded.id, "role": spec.role})
            store.set_experiment_models(preset.name, entries)
            ps = predict_missing(store, loaded, metric_ids, max_length=max_length,
                                 truncation=preset.predict.truncation, batch_size=preset.predict.batch_size, on_progress=on_progress, cancel=cancel)
            ms.predicted, ms.prediction_reused = ps.computed, ps.skipped
            if explain and explain_ids:
                _explain(store, workspace, spec, preset, loaded, explain_ids, ex_len, ms, dpath, on_progress, cancel)
        store.set_experiment_models(preset.name, entries)
        summary.seconds = time.perf_counter() - t0
        return summary
    finally:
        store.close()


def _explain(store: Store, workspace: Workspace, spec: ModelSpec, preset: Preset, loaded: LoadedModel,
             explain_ids: list[str], max_length: int, ms: ModelSummary, dpath: Path | None,
             on_progress: ProgressCallback, cancel: CancelToken) -> None:
    try:
        from engine.explain import explain_sample
    except ImportError:
        on_progress(Progress("explain", "explainer not available in this build; skipping attributions"))
        return
    if preset.explain.dtype != loaded.dtype:
        loaded = load_model(workspace, spec, preset, data_path=dpath, dtype=preset.explain.dtype,
                            on_progress=on_progress, cancel=cancel)
        store.upsert_model(loaded.store_row())
    specs = [preset.explain]
    if spec.role == "reference" and preset.explain.noise_spec() is not None:
        specs.append(preset.explain.noise_spec())
    for es in specs:
        res = explain_sample(store, loaded, explain_ids, es, max_length=max_length,
                             truncation=preset.predict.truncation, on_progress=on_progress, cancel=cancel)
        ms.explained += res.computed
        ms.explanation_reused += res.skipped
    # Faithfulness (ERASER comprehensiveness / sufficiency) of the main explanations.
    from engine.faithfulness import faithfulness_sample

    faith = faithfulness_sample(store, loaded, explain_ids, explain_hash(preset),
                                batch_size=preset.explain.batch_size, on_progress=on_progress, cancel=cancel)
    ms.faithfulness += faith.computed


def require_experiment(store: Store, name: str | None) -> str:
    """The named experiment, or the latest; a clear error when there is none."""
    names = [e["name"] for e in store.experiments()]
    if not names:
        raise BadInput(f"the workspace {store.path.parent} holds no results yet",
                       "run `shapdiff run` first (add --workspace DIR to choose where)")
    if name is None:
        return names[0]
    if name not in names:
        raise BadInput(f"no experiment named {name!r} in this workspace", f"use one of: {', '.join(names)}")
    return name
