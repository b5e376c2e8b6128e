"""`shapdiff serve`: answers on localhost, a headless Chromium shows the app's title, and a
non-local bind is refused without --allow-remote."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from engine.cli import main
from engine.errors import BadInput
from tui.serve import TITLE, check_bind, deliver_exports, is_local_host, served_command

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_hosts() -> None:
    for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2", "LOCALHOST"):
        assert is_local_host(h), h
    for h in ("0.0.0.0", "::", "192.168.1.10", "example.com", "10.0.0.1"):
        assert not is_local_host(h), h


def test_non_local_bind_is_refused_without_the_flag(tmp_path: Path, capsys) -> None:
    with pytest.raises(BadInput) as exc:
        check_bind("0.0.0.0", _free_port())
    assert exc.value.exit_code == 2 and "--allow-remote" in (exc.value.hint or "")
    check_bind("127.0.0.1", _free_port())
    with pytest.raises(BadInput):
        check_bind("127.0.0.1", 70000)
    assert main(["serve", "--workspace", str(tmp_path), "--host", "0.0.0.0", "--port", str(_free_port())]) == 2
    assert main(["serve", "--workspace", str(tmp_path), "--host", "192.168.7.7"]) == 2
    assert "refusing to serve" in capsys.readouterr().err
    with socket.socket() as busy:        # a port in use: a clear error, not a traceback
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["serve", "--workspace", str(tmp_path), "--port", str(busy.getsockname()[1])]) == 2


def test_served_command_is_quoted(tmp_path: Path) -> None:
    ws = tmp_path / "my ws; rm -rf x 'q'"
    argv = shlex.split(served_command(ws))
    assert argv[0] == "exec" and argv[-3:] == ["tui", "--workspace", str(ws)]


def test_deliver_exports_only_when_served(tmp_path: Path) -> None:
    f = tmp_path / "top_features-teacher.png"
    f.write_bytes(b"\x89PNG\r\n\x1a\n")

    class FakeApp:
        def __init__(self, web: bool) -> None:
            self.is_web = web
            self.calls: list[tuple] = []

        def deliver_binary(self, path, **kw):
            self.calls.append((Path(path), kw))
            return f"key{len(self.calls)}"

    term, web = FakeApp(False), FakeApp(True)
    assert deliver_exports(term, [f]) == [] and term.calls == []
    assert deliver_exports(web, [f]) == ["key1"]
    assert web.calls == [(f, {"save_filename": f.name, "open_method": "download"})]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`shapdiff serve` on a free localhost port, as a subprocess; stopped afterwards."""
    from engine.demo import build_demo_workspace

    ws = tmp_path_factory.mktemp("serve-ws")
    build_demo_workspace(ws, n_reviews=12, n_explained=4)
    port = _free_port()
    log = open(ws / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--workspace", str(ws), "--port", str(port)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    body = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                body = r.read().decode()
                break
        except OSError:
            time.sleep(0.2)
    try:
        if body is None:
            log.flush()
            pytest.fail(f"serve did not answer on {url}: {(ws / 'serve.log').read_text()[-2000:]}")
        yield url, body, ws
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)     # the server and any app session it started
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)     # anything of this group still running
        except ProcessLookupError:
            pass
        proc.wait()
        log.close()


def test_serve_answers_on_localhost(server) -> None:
    url, body, ws = server
    assert f"<div>{TITLE}</div>" in body
    assert f'data-session-websocket-url="ws://127.0.0.1:{url.rsplit(":", 1)[1].strip("/")}/ws"' in body


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


async def _browse(url: str, profile: Path, shot: Path, wait_s: float = 60.0) -> dict:
    """Open ``url`` in headless Chromium (DevTools protocol over aiohttp, which textual-serve
    brings), wait until the served app has drawn, and take a screenshot."""
    import asyncio
    import base64
    import json

    import aiohttp

    proc = subprocess.Popen([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                             "--no-first-run", "--disable-background-networking", "--disable-component-update",
                             "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                             "--remote-debugging-port=0", "--window-size=1200,700", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            await asyncio.sleep(0.1)
        port = port_file.read_text().split()[0]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as r:
                page = next(t for t in await r.json() if t["type"] == "page")
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                ids = iter(range(1, 10**6))

                async def call(method: str, **params):
                    mid = next(ids)
                    await ws.send_json({"id": mid, "method": method, "params": params})
                    async for msg in ws:
                        d = json.loads(msg.data)
                        if d.get("id") == mid:
                            return d.get("result", {})

                async def js(expr: str):
                    return (await call("Runtime.evaluate", expression=expr, returnByValue=True))["result"].get("value")

                await call("Page.navigate", url=url)
                state = {}
                deadline = time.monotonic() + wait_s
                while time.monotonic() < deadline:
                    state = {"title": await js("(document.querySelector('.intro div')||{}).textContent"),
                             "body": await js("document.body ? document.body.className : ''")}
                    if "-first-byte" in (state["body"] or "") or "-closed" in (state["body"] or ""):
                        break
                    await asyncio.sleep(0.25)
                await asyncio.sleep(1.0)       # let the first frame paint
                shot.write_bytes(base64.b64decode((await call("Page.captureScreenshot", format="png"))["data"]))
                return state
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (.ci/run installs Debian's chromium)")
def test_headless_chromium_shows_the_app(server, tmp_path: Path) -> None:
    import asyncio

    from matplotlib.image import imread

    url, _, _ = server
    shot = tmp_path / "serve.png"
    state = asyncio.run(_browse(url, tmp_path / "profile", shot))
    assert state.get("title") == TITLE
    assert "-first-byte" in state.get("body", ""), f"the served app never drew (page state {state})"
    img = imread(shot)[..., :3]
    assert img.shape[1] == 1200 and img.shape[0] > 300
    assert float(img.std()) > 0.02, "blank screenshot"
    # The app's header row (its title, "shapdiff · EXPERIMENT · ...") is drawn at the top.
    lum = img.mean(axis=2)
    header = lum[:18]
    assert float((header > 0.5).mean()) > 0.01, "no title text in the app's header row"
