"""A real browser: the neuron inspector notebook in JupyterLab, and report.html over file://, in Debian's Chromium.

Playwright drives the system Chromium (`/usr/bin/chromium`; nothing here may download a browser). Both
pages show a run made by `test_viz.make_fake_run`, which holds a token whose text is a `<script>` element:
it must show as text and run nothing. Screenshots land in each test's tmp_path.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import XSS, make_fake_run

CHROMIUM = os.environ.get("NXKIT_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "06_neuron_inspector.ipynb"
REQUIRED = os.environ.get("NXKIT_REQUIRE_BROWSER") == "1" or bool(os.environ.get("CI"))


def _unavailable() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return (
            "Python playwright is not installed: `make setup` (or `pip install playwright`; never `playwright install`)"
        )
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM}: `make setup` as root installs Debian's (`apt-get install chromium`), or set NXKIT_CHROMIUM"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for this module, stopped after it so that no Playwright loop outlives it
    (a second sync_playwright in one process fails, so no other module starts one)."""
    reason = _unavailable()
    if reason:
        if REQUIRED:
            pytest.fail(f"browser test required (CI or NXKIT_REQUIRE_BROWSER=1) but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    config = tmp_path_factory.mktemp("chromium-config")
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=FLAGS, env={**os.environ, "XDG_CONFIG_HOME": str(config)}
        )
        yield b
        b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, path: str, method: str = "GET"):
    req = urllib.request.Request(base + path, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
    return json.loads(body) if body else None


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on 127.0.0.1 without a token, rooted in a temporary directory holding notebook 06 and a fake run."""
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    run = make_fake_run(root / "run")
    settings = tmp_path / "lab-settings"
    for rel, value in {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
        "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    }.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(value))
    env = {
        **os.environ,
        "NXKIT_INSPECT_RUN": str(run.path),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
    }
    port = _free_port()
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.token=", "--ServerApp.password=",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        "--LabApp.expose_app_in_browser=True", f"--ServerApp.root_dir={root}",
    ]  # fmt: skip
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyterlab.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                _api(base, "/api/status")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start; see {tmp_path / 'jupyterlab.log'}") from None
                time.sleep(0.5)
        yield base, run
    finally:
        try:
            for s in _api(base, "/api/sessions") or []:
                _api(base, f"/api/sessions/{s['id']}", "DELETE")
        except OSError:
            pass
        proc.send_signal(signal.SIGINT)  # jupyter asks to confirm on the first SIGINT; the second stops it
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail the test (running its cleanup) if it takes longer than `seconds` (pytest-timeout is not a dependency)."""

    def expire(signum, frame):
        raise TimeoutError(f"browser test took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _windows_html(page) -> str:
    return page.locator(".nx-windows").first.inner_html()


@pytest.mark.slow
def test_inspector_notebook_in_jupyterlab(browser, lab, tmp_path):
    base, run = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    with deadline(900):
        try:
            page.goto(f"{base}/lab/tree/{NOTEBOOK.name}", timeout=120_000)
            status = page.locator(".jp-StatusBar-TextItem", has_text="Python 3 (ipykernel) | Idle")
            status.first.wait_for(timeout=120_000)
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            # the heatmap renders; the last cell probes a text with the real model, so wait for that too
            page.locator(".jp-OutputArea-output .widget-html-content .nx-window").first.wait_for(timeout=180_000)
            page.locator(".nx-probe .nx-tok").first.wait_for(timeout=300_000)
            tip = page.locator(".nx-probe .nx-tok").first.get_attribute("title")
            assert tip.startswith("real ") and " · simulated " in tip  # both values for each typed token
            status.first.wait_for(timeout=120_000)

            # choose layer 0, neuron 0 in the dropdowns: its top window holds the script token
            layer = page.locator(".widget-dropdown", has=page.locator("label", has_text="layer")).locator("select")
            neuron = page.locator(".widget-dropdown", has=page.locator("label", has_text="neuron")).locator("select")
            layer.select_option(label="0")
            neuron.select_option(index=1)
            page.locator(".nx-explanation").first.wait_for()
            page.wait_for_function(
                "() => document.querySelector('h3') && [...document.querySelectorAll('h3')].some(h => h.textContent.includes('layer 0 · neuron 1'))",
                timeout=60_000,
            )
            # the windows widget updates in its own message, after the title: wait for the element that names the
            # neuron (comparing with what was on screen before would race that message)
            page.locator('.nx-windows[data-neuron="0/1"]').first.wait_for(timeout=60_000)
            before = _windows_html(page)
            neuron.select_option(index=0)
            page.wait_for_function(
                "() => [...document.querySelectorAll('h3')].some(h => h.textContent.includes('layer 0 · neuron 0'))",
                timeout=60_000,
            )
            page.locator('.nx-windows[data-neuron="0/0"]').first.wait_for(timeout=60_000)
            after = _windows_html(page)
            assert after != before and page.locator(".nx-windows .nx-tok").count() > 20

            # the script token shows as text and runs nothing
            shown = page.locator(".nx-windows .nx-tok", has_text=XSS)
            assert shown.count() >= 1 and shown.first.inner_text() == XSS
            assert page.evaluate("() => window.__nxkit_xss") is None
            assert page.locator(".nx-windows script").count() == 0
            page.locator(".nx-explanation").first.scroll_into_view_if_needed()
            page.screenshot(path=tmp_path / "inspector.png")
        finally:
            page.close()


def test_report_opens_from_file_without_requests(browser, tmp_path):
    from nxkit.views.report import write_report

    path = write_report(make_fake_run(tmp_path / "run"))
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    with deadline(180):
        try:
            page.goto(path.as_uri(), timeout=60_000)
            page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=60_000)
            assert page.locator(".js-plotly-plot").count() == 5
            outside = [u for u in requests if not u.startswith(("file:", "data:", "blob:"))]
            assert not outside, outside
            assert page.locator(".nx-tok", has_text=XSS).count() >= 1
            assert page.evaluate("() => window.__nxkit_xss") is None

            # the table sorts by a column when its header is clicked
            def scores() -> list[float]:
                cells = page.locator("table.nx-sortable tbody tr td:nth-child(4)").evaluate_all(
                    "els => els.map(e => e.dataset.v)"
                )
                return [float(v) for v in cells]

            page.locator("table.nx-sortable th", has_text="score").first.click()
            assert scores() == sorted(scores(), reverse=True)
            page.locator("table.nx-sortable th", has_text="score").first.click()
            assert scores() == sorted(scores())
            page.screenshot(path=tmp_path / "report.png", full_page=True)
        finally:
            page.close()
