"""`shapdiff serve`: the terminal app in a web browser, through textual-serve.

Each browser tab gets its own ``shapdiff tui --workspace DIR`` process. The server binds to
127.0.0.1 unless told otherwise; a host other machines can reach needs ``--allow-remote``,
because whoever reaches the page drives an app that computes and writes on this machine.

Files the served app exports reach the browser as downloads: the TUI calls
:func:`deliver_exports` after writing them (in a terminal it does nothing, the files are
already in the workspace).
"""

from __future__ import annotations

import ipaddress
import shlex
import shutil
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.errors import BadInput

TITLE = "shapdiff"
LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def is_local_host(host: str) -> bool:
    """True when ``host`` is a loopback name or address (only this machine can connect)."""
    h = host.strip().strip("[]").lower()
    if h in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_bind(host: str, port: int, allow_remote: bool = False) -> None:
    """Refuse (BadInput, exit 2) a non-local host without ``allow_remote``, a bad or busy port."""
    if not host or not host.strip():
        raise BadInput("--host is empty", "leave it out to serve on 127.0.0.1")
    if not is_local_host(host) and not allow_remote:
        raise BadInput(
            f"refusing to serve on {host!r}: other machines could reach the app, which runs and writes on this one",
            "serve on 127.0.0.1 (the default) and use an SSH tunnel (ssh -L 8000:127.0.0.1:8000 HOST), "
            "or pass --allow-remote if you really mean it")
    if not 1 <= port <= 65535:
        raise BadInput(f"--port {port} is not a port number", "use a number from 1024 to 65535, e.g. --port 8000")
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host.strip("[]"), port))
    except OSError as exc:
        raise BadInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                       "choose another --port (or stop what is using this one)") from exc


def served_command(workspace: Path, data_path: str | None = None) -> str:
    """The shell command each browser session runs: ``shapdiff tui --workspace DIR``."""
    exe = Path(sys.executable).with_name("shapdiff")
    if exe.exists():
        argv = [str(exe)]
    elif shutil.which("shapdiff"):
        argv = [str(shutil.which("shapdiff"))]
    else:
        argv = [sys.executable, "-m", "engine.cli"]
    argv += ["tui", "--workspace", str(workspace)]
    if data_path:
        argv += ["--data-path", str(data_path)]
    return "exec " + shlex.join(argv)     # the app replaces the shell: one process per session


def make_server(command: str, host: str, port: int, public_url: str | None = None):
    from textual_serve.server import Server

    return Server(command, host=host.strip("[]"), port=port, title=TITLE, public_url=public_url)


def serve_command(args: Any) -> int:
    """The `shapdiff serve` command (arguments from engine.cli)."""
    from engine.workspace import resolve_workspace

    ws = resolve_workspace(getattr(args, "workspace", None))
    check_bind(args.host, args.port, args.allow_remote)
    if not ws.root.is_dir():
        raise BadInput(f"the workspace {ws.root} does not exist",
                       "pass --workspace DIR of an earlier run (or run `shapdiff run` / `shapdiff demo` first)")
    command = served_command(ws.root, getattr(args, "data_path", None))
    host = args.host.strip("[]")
    url = args.public_url or f"http://{'[' + host + ']' if ':' in host else host}:{args.port}"
    print(f"serving the shapdiff app for {ws.root} on {url} (Ctrl+C stops)", file=sys.stderr, flush=True)
    if not is_local_host(host):
        print("warning: anyone who can reach this address can drive the app (it computes and writes here)",
              file=sys.stderr, flush=True)
        if not args.public_url and host in ("0.0.0.0", "::"):
            print("  browsers need the machine's own address: pass --public-url http://NAME:PORT",
                  file=sys.stderr, flush=True)
    try:
        make_server(command, host, args.port, public_url=url).serve()
    finally:
        end_sessions()
    return 0


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        kids.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return kids


def descendants(pid: int) -> list[int]:
    """Processes started (directly or not) by ``pid``; empty where /proc is missing."""
    kids, out, todo = _children(), [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def end_sessions(grace_s: float = 3.0) -> None:
    """End the app sessions this server started that are still running (SIGTERM, then SIGKILL)."""
    import os
    import signal
    import time

    pids = descendants(os.getpid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (pids := [p for p in pids if Path(f"/proc/{p}").exists()
                                                          and not _zombie(p)]):
            time.sleep(0.1)
        if not pids:
            return


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def deliver_exports(app: Any, paths: Iterable[str | Path]) -> list[str]:
    """Send exported files to the browser as downloads when ``app`` is served; returns their keys.

    In a terminal (``app.is_web`` false) nothing happens: the files are already written
    where the TUI said. Call it from the app's thread after ``engine.export.export_figures``.
    """
    if not getattr(app, "is_web", False):
        return []
    keys = []
    for p in paths:
        p = Path(p)
        key = app.deliver_binary(p, save_filename=p.name, open_method="download")
        if key:
            keys.append(key)
    return keys
