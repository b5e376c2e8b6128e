"""The TUI's recompute keys on a real (tiny) model: no fakes between the key and SHAP.

A workspace is made by engine.jobs.run_experiment with a 2-layer local classifier and its
int8 variant on a few IMDB reviews; `r` re-explains the selected review with both models
in a worker, `R` finds the sample complete."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from engine.config import load_preset
from engine.jobs import run_experiment
from engine.store import open_store
from engine.workspace import Workspace
from tui.app import create_app

pytestmark = pytest.mark.slow


def _preset(path: Path, model_dir: Path) -> Path:
    path.write_text(f"""
name = "tiny-tui"
[data]
dataset = "imdb"
[sample]
metrics_n = 6
explain_n = 2
seed = 3
[[models]]
name = "ref"
source = "{model_dir}"
role = "reference"
[[models]]
name = "ref-int8"
source = "{model_dir}"
variant = "int8"
[predict]
max_length = 48
batch_size = 8
[explain]
max_evals = 40
noise_seed = 1
""")
    return path


async def _wait(pilot, cond, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not cond() and time.monotonic() - t0 < timeout:
        await pilot.pause(0.1)
    assert cond()


def test_recompute_one_review_and_the_sample(tmp_path: Path, tiny_model_dir: Path, shared_data: Path) -> None:
    preset = load_preset(_preset(tmp_path / "p.toml", tiny_model_dir))
    ws = Workspace(tmp_path / "ws")
    run_experiment(preset, ws, data_path=shared_data)
    with open_store(ws.db_path) as st:
        before = {r["id"]: r["created_at"] for r in st.db.query("SELECT id, created_at FROM explanations")}
    assert before

    async def main() -> None:
        app = create_app(ws.root, data_path=shared_data)
        async with app.run_test(size=(110, 34)) as pilot:
            await pilot.pause()
            await pilot.press("x", "2")                  # explained reviews, Compare pane
            await pilot.pause()
            review = app.current
            assert review is not None
            await pilot.press("R")                       # the sample: everything is stored already
            await _wait(pilot, lambda: app._job is None)
            msgs = [str(n.message) for n in app._notifications]
            assert app.screen.__class__.__name__ != "ErrorDialog", getattr(app.screen, "message", "")
            assert any("already stored" in m for m in msgs), msgs
            await pilot.press("r")                       # this review, both models, in a worker
            await _wait(pilot, lambda: app._job is None)
            if app.screen.__class__.__name__ == "ErrorDialog":
                raise AssertionError(f"recompute failed: {app.screen.message} ({app.screen.hint})")
            msgs = [str(n.message) for n in app._notifications]
            assert any(f"review {review} recomputed for ref, ref-int8" in m for m in msgs), msgs
            app._notifications.clear()
            await pilot.press("R")                       # the recomputed review left nothing missing
            await _wait(pilot, lambda: app._job is None)
            msgs = [str(n.message) for n in app._notifications]
            assert any("already stored" in m for m in msgs), msgs
            return review

    review = asyncio.run(main())
    with open_store(ws.db_path) as st:
        rows = list(st.db.query("SELECT id, review_id, model_id FROM explanations WHERE review_id = ?", [review]))
        ids_after = {r["id"] for r in rows}
    # the recomputed explanations replaced the stored ones of the main settings (new row ids)
    assert ids_after - set(before)
