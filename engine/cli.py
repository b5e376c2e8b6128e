"""The `shapdiff` command. Every subcommand calls the same engine functions as the TUI.

Exit codes: 0 ok, 1 the work failed, 2 bad input (the message says what to do), 130 cancelled.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from engine.errors import BadInput, Cancelled, ShapdiffError
from engine.progress import CancelToken, Progress

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# -- output helpers -------------------------------------------------------------------

@contextmanager
def progress_reporter(quiet: bool = False) -> Iterator[Callable[[Progress], None]]:
    """A Progress callback: Rich bars on a terminal, plain lines otherwise."""
    if quiet:
        yield lambda p: None
        return
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress
        from rich.progress import TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        bars: dict[tuple[str, str], int] = {}
        with RichProgress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn(), console=console, transient=False) as rp:
            def report(p: Progress) -> None:
                key = (p.stage, p.task)
                if p.total is None:
                    rp.console.print(p.message, markup=False, highlight=False)
                    return
                if key not in bars:
                    bars[key] = rp.add_task(p.message, total=p.total)
                rp.update(bars[key], completed=p.done, total=p.total, description=p.message)
            yield report
        return
    last: dict[tuple[str, str], str] = {}

    def plain(p: Progress) -> None:
        if last.get((p.stage, p.task)) == p.message:
            return
        last[(p.stage, p.task)] = p.message
        print(f"[{p.stage}] {p.message}", file=sys.stderr, flush=True)
    yield plain


def print_json(obj: object) -> None:
    print(json.dumps(obj, sort_keys=True, default=str))


def _workspace(args: argparse.Namespace):
    from engine.workspace import resolve_workspace

    return resolve_workspace(getattr(args, "workspace", None))


def _open_existing_store(args: argparse.Namespace):
    from engine.store import open_store

    ws = _workspace(args)
    if not ws.db_path.exists():
        raise BadInput(f"no results in {ws.root} (no shapdiff.db)",
                       "run `shapdiff run` first, or pass --workspace DIR of an earlier run")
    # results on a read-only disk can still be read
    return open_store(ws.db_path, readonly=not os.access(ws.root, os.W_OK))


# -- run / metrics ----------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from engine.config import load_preset
    from engine.jobs import run_experiment, with_overrides

    preset = with_overrides(load_preset(args.preset), args.metrics_n, args.explain_n, args.seed)
    ws = _workspace(args)
    with progress_reporter(args.quiet) as report:
        summary = run_experiment(preset, ws, data_path=args.data_path, explain=not args.no_explain,
                                 on_progress=report, cancel=CancelToken())
    if args.json:
        from dataclasses import asdict
        print_json(asdict(summary) | {"computed": summary.computed})
        return 0
    if summary.computed == 0:
        print(f"nothing to compute: all results for preset {preset.name!r} are already stored in {ws.db_path}")
    else:
        for m in summary.models:
            print(f"{m.name}: {m.predicted} predicted ({m.prediction_reused} reused), "
                  f"{m.explained} explained ({m.explanation_reused} reused)")
        print(f"done in {summary.seconds:.1f} s; results in {ws.db_path}")
    return 0


def format_metrics_table(rows) -> str:
    """The study's Table 1 for every model, as plain text."""
    lines = [f"{'model':<20} {'class':<9} {'precision':>9} {'recall':>7} {'F1':>6} {'support':>8}   accuracy"]
    for m in rows:
        for i, c in enumerate(m.classes):
            acc = f"{m.accuracy:.3f} (n={m.n})" if i == 0 else ""
            name = f"{m.name}{' *' if m.role == 'reference' else ''}" if i == 0 else ""
            lines.append(f"{name:<20} {c.label:<9} {c.precision:>9.3f} {c.recall:>7.3f} {c.f1:>6.3f} {c.support:>8}   {acc}")
        (tn, fp), (fn, tp) = m.confusion
        lines.append(f"{'':<20} confusion [[TN {tn}, FP {fp}], [FN {fn}, TP {tp}]]"
                     + (f"; {m.truncated} truncated" if m.truncated else ""))
    lines.append("* reference model")
    return "\n".join(lines)


def cmd_metrics(args: argparse.Namespace) -> int:
    from engine.jobs import require_experiment
    from engine.metrics import experiment_metrics

    with _open_existing_store(args) as store:
        exp = require_experiment(store, args.experiment)
        rows = experiment_metrics(store, exp)
    if args.json:
        print_json({"experiment": exp, "models": [m.to_dict() for m in rows]})
    else:
        print(f"experiment {exp}")
        print(format_metrics_table(rows))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.demo import build_demo_workspace

    ws = _workspace(args).ensure()
    if ws.db_path.exists() and not args.force:
        raise BadInput(f"{ws.db_path} already exists", "choose an empty --workspace, or pass --force to add the demo")
    db = build_demo_workspace(ws.root, args.reviews, args.explained)
    print(f"demo workspace written to {db}; open it with: shapdiff tui --workspace {ws.root}")
    return 0


def cmd_tui(args: argparse.Namespace) -> int:
    from tui.app import run_app

    return run_app(_workspace(args), data_path=getattr(args, "data_path", None))


def cmd_serve(args: argparse.Namespace) -> int:
    from tui.serve import serve_command

    return serve_command(args)


# -- parser -----------------------------------------------------------------------------

def _common(p: argparse.ArgumentParser, data: bool = False) -> None:
    p.add_argument("--workspace", metavar="DIR", help="workspace folder (default: data/workspace or $SHAPDIFF_WORKSPACE)")
    if data:
        p.add_argument("--data-path", metavar="DIR", help="data folder (default: $SHAPDIFF_DATA or ../shared/data)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shapdiff", description=__doc__.splitlines()[0])
    _common(parser, data=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="compute whatever the preset needs that is missing")
    _common(p, data=True)
    p.add_argument("--preset", default="offline", help="preset name (data/presets/) or .toml file")
    p.add_argument("--metrics-n", type=int, help="reviews in the metrics sample")
    p.add_argument("--explain-n", type=int, help="reviews explained (a subset of the metrics sample)")
    p.add_argument("--seed", type=int, help="sampling seed")
    p.add_argument("--no-explain", action="store_true", help="predictions and metrics only")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("metrics", help="per-model, per-class precision/recall/F1 (the study's Table 1)")
    _common(p)
    p.add_argument("--experiment", help="experiment (preset) name; default: the latest")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("demo", help="write a synthetic workspace (no models run) to try the app")
    _common(p)
    p.add_argument("--reviews", type=int, default=200)
    p.add_argument("--explained", type=int, default=20)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("tui", help="open the terminal app (the default command)")
    _common(p, data=True)
    p.set_defaults(func=cmd_tui)

    # -- zoo (engine/zoo.py) ------------------------------------------------------------
    from engine.zoo import add_zoo_parser

    add_zoo_parser(sub, _common)
    # -- explain + bench (engine/explain.py, engine/bench.py) --------------------------
    from engine.bench import add_bench_parser
    from engine.explain import add_explain_parser

    add_explain_parser(sub, _common)
    add_bench_parser(sub, _common)
    # -- compare (engine/compare.py) ----------------------------------------------------
    from engine.compare import add_compare_parser

    add_compare_parser(sub, _common)
    # -- export + serve (engine/export.py, tui/serve) ----------------------------------
    from engine.export import add_export_parser

    add_export_parser(sub, _common)
    p = sub.add_parser("serve", help="serve the terminal app in a web browser (textual-serve)")
    _common(p, data=True)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other machines can reach (the app can run commands on this machine)")
    p.add_argument("--public-url", help="the URL browsers use, when it differs from http://HOST:PORT")
    p.set_defaults(func=cmd_serve)
    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the real command line: once, before anything heavy is imported
        from engine.allocator import reexec_with_tcmalloc

        reexec_with_tcmalloc()
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None) or cmd_tui
    try:
        return int(func(args) or 0)
    except ShapdiffError as exc:
        print(f"shapdiff: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  what to do: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except (Cancelled, KeyboardInterrupt):
        print("shapdiff: cancelled; everything finished so far is stored", file=sys.stderr)
        return 130
    except BrokenPipeError:  # pragma: no cover - e.g. piped into head
        return 0
    except OSError as exc:
        # a full or read-only disk while writing models, exports or figures: the user's to fix
        if exc.errno not in _DISK_ERRNOS:
            raise
        print(f"shapdiff: error: cannot write {exc.filename or 'a file'}: {exc.strerror or exc}", file=sys.stderr)
        print("  what to do: free space or choose a writable --workspace / --out; "
              "results stored before are whole", file=sys.stderr)
        return 2
    except sqlite3.OperationalError as exc:
        # a write outside Store.write() that met a full disk or a lock held too long
        from engine.store import _ENVIRONMENT_ERRORS

        if not any(k in str(exc) for k in _ENVIRONMENT_ERRORS):
            raise
        print(f"shapdiff: error: the database could not be written ({exc})", file=sys.stderr)
        print("  what to do: free disk space, or wait for the other shapdiff process, and run again; "
              "results stored before are whole", file=sys.stderr)
        return 2


_DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
