"""The real app in a real terminal: tmux at 80x24 with TERM=xterm-256color, keys sent,
the screen read back with capture-pane. Needs tmux (apt-get install -y tmux)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tui_support import MARKUP_ID, make_workspace

PROJECT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def tmux(*args: str, check: bool = True) -> str:
    out = subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=20)
    if check and out.returncode != 0:
        raise AssertionError(f"tmux {' '.join(args)}: {out.stderr}")
    return out.stdout


def capture(session: str, escapes: bool = False) -> str:
    return tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", session)


def wait_for(session: str, *needles: str, timeout: float = 30.0) -> str:
    t0 = time.monotonic()
    screen = ""
    while time.monotonic() - t0 < timeout:
        screen = capture(session)
        if all(n in screen for n in needles):
            time.sleep(0.3)            # let the paint finish
            return capture(session)
        time.sleep(0.2)
    raise AssertionError(f"{needles!r} did not appear within {timeout} s; the screen was:\n{screen}")


def test_real_app_in_tmux(tmp_path):
    ws = make_workspace(tmp_path / "ws", 30, 8)
    session = f"shapdiff-test-{uuid.uuid4().hex[:8]}"
    done = tmp_path / "exit-code"
    cmd = (f"cd {shlex.quote(str(PROJECT))} && env TERM=xterm-256color COLORTERM= "
           f"{shlex.quote(sys.executable)} -m engine.cli tui --workspace {shlex.quote(str(ws))}; "
           f"echo $? > {shlex.quote(str(done))}; sleep 30")
    env = dict(os.environ, TERM="xterm-256color")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd],
                   check=True, env=env, timeout=20)
    try:
        screen = wait_for(session, "teacher vs student", "q Quit", "[red]x[/] is great")
        lines = screen.splitlines()
        assert len(lines) == 24 and all(len(l) <= 80 for l in lines)
        assert "Reviews" in screen and "Compare" in screen and "q Quit" in screen
        assert "[red]x[/] is great" in screen            # markup-looking text shown literally
        tmux("send-keys", "-t", session, "j")
        time.sleep(0.5)
        tmux("send-keys", "-t", session, "k")
        time.sleep(0.5)
        tmux("send-keys", "-t", session, "2")
        screen = wait_for(session, "top → negative", MARKUP_ID)
        assert MARKUP_ID in screen and "teacher" in screen and "student" in screen
        colours = capture(session, escapes=True)
        assert "48;5;" in colours and "38;2;" not in colours   # 256-colour codes, no truecolor
        assert any(f"48;5;{n}m" in colours for n in (160, 26, 224, 189, 210, 217, 111, 153))
        tmux("send-keys", "-t", session, "3")
        wait_for(session, "Table 1", "prec", "rec", "F1", "acc", "teacher-int8")
        tmux("send-keys", "-t", session, "F1")
        wait_for(session, "shapdiff help")
        tmux("send-keys", "-t", session, "Escape")
        time.sleep(0.5)
        tmux("send-keys", "-t", session, "q")
        t0 = time.monotonic()
        while not done.exists() and time.monotonic() - t0 < 15:
            time.sleep(0.2)
        assert done.exists() and done.read_text().strip() == "0"
    finally:
        tmux("kill-session", "-t", session, check=False)
