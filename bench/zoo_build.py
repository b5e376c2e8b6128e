"""Build the whole zoo into a workspace and report time and accuracy per model.

    TOKENIZERS_PARALLELISM=false flock /tmp/shapdiff-heavy.lock \
        .venv/bin/python bench/zoo_build.py --workspace /tmp/zoo-ws [--set n_train=3000 ...]

``--set KEY=VALUE`` overrides a field of both recipes (``--teacher-set`` / ``--student-set``
for one of them), so recipe variations can be measured without editing engine/zoo.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engine import zoo  # noqa: E402
from engine.workspace import Workspace  # noqa: E402


def _overrides(pairs: list[str]) -> dict:
    fields = {f.name: f for f in dataclasses.fields(zoo.Recipe)}
    out = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        if key not in fields:
            raise SystemExit(f"unknown recipe field {key!r}; fields: {', '.join(fields)}")
        out[key] = json.loads(raw) if raw[:1] in "0123456789-[tf" else raw
        if key == "layers":
            out[key] = tuple(out[key])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--data-path")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--teacher-set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--student-set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--only", choices=["teacher", "student", "all"], default="all")
    ap.add_argument("--json", help="write the entries here as JSON")
    args = ap.parse_args()

    common = _overrides(args.set)
    teacher = dataclasses.replace(zoo.default_recipe("teacher"), **common, **_overrides(args.teacher_set))
    student = dataclasses.replace(zoo.default_recipe("student"), **common, **_overrides(args.student_set),
                                  teacher=teacher)
    ws = Workspace(Path(args.workspace).resolve())
    data_path = Path(args.data_path) if args.data_path else None
    last = [0.0]

    def report(p) -> None:
        now = time.perf_counter()
        if p.total is None or p.done in (0, p.total) or now - last[0] > 15:
            last[0] = now
            extra = f" eta {p.info['eta_s']:.0f}s" if "eta_s" in p.info else ""
            print(f"[{time.strftime('%H:%M:%S')}] {p.message}{extra}", flush=True)

    t0 = time.perf_counter()
    if args.only == "teacher":
        folders = [zoo.ensure_model(ws, teacher, data_path=data_path, on_progress=report)]
        entries = [zoo._entry(f) for f in folders]
    elif args.only == "student":
        folders = [zoo.ensure_model(ws, student, data_path=data_path, on_progress=report)]
        entries = [zoo._entry(f) for f in folders]
    else:
        entries = zoo.build_all(ws, data_path=data_path, on_progress=report, teacher=teacher, student=student)
    total = time.perf_counter() - t0
    print(f"\n{'model':18} {'acc':>6} {'build s':>8} {'train s':>8} {'eval s':>7}  folder")
    for e in entries:
        c = e.card
        print(f"{e.name:18} {e.accuracy:6.3f} {e.build_seconds:8.1f} {c.get('train_seconds', 0):8.1f} "
              f"{c['eval']['seconds']:7.1f}  {e.folder.name}")
    print(f"total wall {total:.1f} s (includes imports after start, cached models count 0)")
    if args.json:
        Path(args.json).write_text(json.dumps({"total_s": total, "entries": [e.row() for e in entries]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
