"""engine.allocator: shapdiff re-executes itself once with tcmalloc preloaded when it exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.allocator import MARK, OPT_OUT, preload_env, tcmalloc_path

LIB = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


def test_preload_env_decisions():
    env = preload_env({"PATH": "/bin", "LD_PRELOAD": "/x/other.so"}, LIB)
    assert env is not None and env["LD_PRELOAD"] == f"{LIB}:/x/other.so" and env[MARK] == "1"
    assert env["PATH"] == "/bin"
    assert preload_env({}, None) is None                                   # not installed
    assert preload_env({OPT_OUT: "system"}, LIB) is None                   # opted out
    assert preload_env({"LD_PRELOAD": LIB}, LIB) is None                   # already there
    assert preload_env({MARK: "1"}, LIB) is None                           # never twice


def test_tcmalloc_path_finds_the_library(tmp_path):
    assert tcmalloc_path([str(tmp_path)]) is None
    (tmp_path / "libtcmalloc_minimal.so.4").write_bytes(b"")
    assert tcmalloc_path(["/nonexistent", str(tmp_path)]) == str(tmp_path / "libtcmalloc_minimal.so.4")


@pytest.mark.skipif(tcmalloc_path() is None or not sys.platform.startswith("linux"),
                    reason="tcmalloc not installed (apt-get install libtcmalloc-minimal4)")
def test_the_command_runs_with_tcmalloc_loaded():
    """`shapdiff` re-executes itself with tcmalloc mapped, and does its work once."""
    code = ("import sys; from engine.cli import main\n"
            "sys.argv = ['shapdiff', '--help']\n"
            "print('maps:', 'tcmalloc' in open('/proc/self/maps').read(), flush=True); main()")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", MARK, OPT_OUT)}
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    lines = [x for x in out.stdout.splitlines() if x.startswith("maps:")]
    # the first process prints before main() re-executes it; the re-execution has tcmalloc
    assert lines == ["maps: False", "maps: True"], out.stdout + out.stderr
    assert out.returncode == 0 and out.stdout.count("usage: shapdiff") == 1
    opted = subprocess.run([sys.executable, "-c", code], cwd=root, env=env | {OPT_OUT: "system"},
                           capture_output=True, text=True, timeout=120)
    assert [x for x in opted.stdout.splitlines() if x.startswith("maps:")] == ["maps: False"]
