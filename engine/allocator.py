"""tcmalloc for the heavy commands, when the system has it.

PyTorch on the CPU allocates and frees many short-lived buffers; glibc's malloc returns
them to the system and faults them in again. Measured on the 2-core machine: a bare
training step (no dropout) 1.06 -> 0.82 s; the zoo's real training loop 32.6 -> 30.5 s
(7%); a whole zoo build 522 -> 512 s. Modest, but free.
It cannot be switched on from inside a running process, so ``shapdiff`` re-executes itself
once with ``LD_PRELOAD`` set, before anything heavy is imported.

Install it with ``apt-get install libtcmalloc-minimal4`` (Debian/Ubuntu). Without it
nothing changes. ``SHAPDIFF_MALLOC=system`` keeps the system allocator.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

LIBRARY = "libtcmalloc_minimal.so.4"
SEARCH = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
          "/usr/local/lib")
OPT_OUT = "SHAPDIFF_MALLOC"
MARK = "SHAPDIFF_REEXECUTED"


def tcmalloc_path(folders: Sequence[str] = SEARCH) -> str | None:
    """The tcmalloc library's path, or None when it is not installed."""
    for folder in folders:
        path = Path(folder) / LIBRARY
        if path.is_file():
            return str(path)
    return None


def preload_env(environ: Mapping[str, str], library: str | None) -> dict[str, str] | None:
    """The environment to re-execute with, or None to go on as we are: no library, the user
    opted out, it is preloaded already, or this process is the re-execution."""
    if library is None or environ.get(OPT_OUT, "").lower() == "system" or environ.get(MARK):
        return None
    preloaded = environ.get("LD_PRELOAD", "")
    if "tcmalloc" in preloaded or "jemalloc" in preloaded:
        return None
    env = dict(environ)
    env["LD_PRELOAD"] = ":".join(p for p in (library, preloaded) if p)
    env[MARK] = "1"
    return env


def reexec_with_tcmalloc() -> None:
    """Replace this process by the same command with tcmalloc preloaded (Linux only); returns
    only when that is not needed or not possible."""
    if not sys.platform.startswith("linux"):
        return
    env = preload_env(os.environ, tcmalloc_path())
    argv = list(getattr(sys, "orig_argv", []) or [])
    if env is None or len(argv) < 2:
        return
    try:
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    except OSError:  # pragma: no cover - exec refused: run with the system allocator
        return
