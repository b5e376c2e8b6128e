"""The TUI's background jobs: thin calls into the engine, run in thread workers.

Each function opens its own Store (one SQLite connection per thread), reports through
``on_progress`` and checks ``cancel`` between units of work. Nothing heavy (torch,
transformers, shap) is imported before one of these runs. Tests replace these functions
with fakes, so the app's worker wiring is tested without models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.errors import BadInput
from engine.progress import NEVER, CancelToken, Progress, ProgressCallback, no_progress
from engine.workspace import Workspace


def _preset_of(workspace: Workspace, experiment: str):
    from engine.config import parse_preset
    from engine.store import open_store

    with open_store(workspace.db_path) as store:
        rows = [e for e in store.experiments() if e["name"] == experiment]
    if not rows:
        raise BadInput(f"no experiment named {experiment!r} in this workspace", "run `shapdiff run` first")
    import json

    return parse_preset(json.loads(rows[0]["preset"]), f"experiment {experiment}")


def _check_runnable(preset) -> None:
    demo = [m.name for m in preset.models if m.source.startswith("demo:")]
    if demo:
        raise BadInput(
            f"this is a synthetic demo workspace: its models ({', '.join(demo)}) cannot be run",
            "open a workspace made by `shapdiff run` (e.g. the offline preset) to recompute")


def run_default(workspace: Workspace, *, data_path: str | Path | None = None,
                on_progress: ProgressCallback = no_progress, cancel: CancelToken = NEVER) -> str:
    """Run the default experiment (the offline preset): whatever is missing is computed."""
    from engine.config import load_preset
    from engine.jobs import run_experiment

    summary = run_experiment(load_preset("offline"), workspace, data_path=data_path,
                             on_progress=on_progress, cancel=cancel)
    return f"default experiment done: {summary.computed} results computed in {summary.seconds:.0f} s"


def recompute_sample(workspace: Workspace, experiment: str, *, data_path: str | Path | None = None,
                     on_progress: ProgressCallback = no_progress, cancel: CancelToken = NEVER) -> str:
    """Compute whatever the experiment's preset needs that is not stored (resumable)."""
    from engine.jobs import run_experiment

    preset = _preset_of(workspace, experiment)
    _check_runnable(preset)
    summary = run_experiment(preset, workspace, data_path=data_path, on_progress=on_progress, cancel=cancel)
    if summary.computed == 0:
        return f"{experiment}: everything is already stored"
    return f"{experiment}: {summary.computed} results computed in {summary.seconds:.0f} s"


def recompute_review(workspace: Workspace, experiment: str, models: Sequence[str], review_id: str, *,
                     data_path: str | Path | None = None, on_progress: ProgressCallback = no_progress,
                     cancel: CancelToken = NEVER) -> str:
    """Explain one review again with each named model (the experiment's settings), replacing
    the stored explanation of those settings."""
    preset = _preset_of(workspace, experiment)
    _check_runnable(preset)
    from engine.explain import explain_review
    from engine.jobs import load_model
    from engine.store import open_store

    specs = {m.name: m for m in preset.models}
    done = []
    with open_store(workspace.db_path) as store:
        for i, name in enumerate(models):
            cancel.check()
            spec = specs.get(name)
            if spec is None:
                raise BadInput(f"model {name!r} is not in the preset of {experiment!r}", "pick another pair (p)")
            on_progress(Progress("explain", f"loading {name}", i, len(models), task=name))
            loaded = load_model(workspace, spec, preset, data_path=Path(data_path) if data_path else None,
                                dtype=preset.explain.dtype, on_progress=on_progress, cancel=cancel)
            store.upsert_model(loaded.store_row())
            max_length = preset.explain.max_length or preset.predict.max_length
            stored = explain_review(store, loaded, review_id, preset.explain, max_length=max_length,
                                    truncation=preset.predict.truncation, on_progress=on_progress, cancel=cancel)
            _refresh_faithfulness(store, loaded, review_id, stored, preset, on_progress, cancel)
            done.append(name)
            on_progress(Progress("explain", f"{name}: explained", i + 1, len(models), task=name))
    return f"review {review_id} recomputed for {', '.join(done)}"


def _refresh_faithfulness(store, loaded, review_id: str, stored: Any, preset, on_progress: ProgressCallback,
                          cancel: CancelToken) -> None:
    """A new explanation has no faithfulness yet: compute it for this review, as the pipeline
    does for the sample (so the sample stays complete)."""
    if not isinstance(stored, dict) or not stored.get("settings_hash"):
        return
    try:
        from engine.faithfulness import faithfulness_sample
    except ImportError:  # pragma: no cover - build without faithfulness
        return
    faithfulness_sample(store, loaded, [review_id], stored["settings_hash"], batch_size=preset.explain.batch_size,
                        on_progress=on_progress, cancel=cancel)


def export_specs(specs: Sequence[Any], folder: Path, *, on_progress: ProgressCallback = no_progress,
                 cancel: CancelToken = NEVER) -> list[Path]:
    """Write the FigureSpecs to PNG and SVG through the engine's matplotlib renderer."""
    try:
        from engine.export import export_figures
    except ImportError:  # pragma: no cover - export module absent
        export_figures = None
    from engine.figures import save_figure

    out: list[Path] = []
    for i, spec in enumerate(specs):
        cancel.check()
        on_progress(Progress("export", f"writing {spec.key}", i, len(specs)))
        out.extend(export_figures([spec], folder) if export_figures else save_figure(spec, folder))
    on_progress(Progress("export", f"{len(out)} files written", len(specs), len(specs)))
    return out
