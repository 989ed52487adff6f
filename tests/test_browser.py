"""The truncation explorer in a real browser: JupyterLab and Voila, driven in headless chromium.

For each front end: start the server on a free localhost port, open the page with Playwright
(Debian's chromium, not Playwright's own download), wait for the truncation explorer, read its bytes
label and the decoded frame's ``src``, move the k slider with the keyboard, and check that both
change. Screenshots go to ``$PGVC_SCREENSHOT_DIR`` (or the test's tmp folder); their paths are
printed. Servers and their kernels are stopped in ``finally``.

    make test-browser          # or: pytest -m browser tests/test_browser.py -s
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import REPO_ROOT, require_tool, skip_or_fail

pytestmark = pytest.mark.browser

TRUNCATION_NOTEBOOK = REPO_ROOT / "notebooks" / "05_progressive_truncation.ipynb"
EXPLORER_NOTEBOOK = REPO_ROOT / "notebooks" / "explorer.ipynb"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "pgvc-browser-test"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
WIDGET_TIMEOUT_MS = 150_000   # kernel start + encode + one decode per k on 2 busy cores
STEP_TIMEOUT_MS = 30_000      # one slider move

BYTES = ".pgvc-truncation-label .pgvc-bytes"
FRAME = "img.pgvc-decoded-frame"
K_HANDLE = ".pgvc-truncation .pgvc-k-slider .noUi-handle"


# ---- processes -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(tmp: Path) -> dict:
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # kernels pick the inline backend themselves (Agg would print figures as text)
    env.update(OMP_NUM_THREADS="1", HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"), IPYTHONDIR=str(tmp / "ipython"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


@contextmanager
def server(cmd: list[str], url: str, tmp: Path, name: str, timeout: float = 90.0):
    """Run ``cmd`` in its own process group until ``url`` answers; stop the group (server and the
    kernels it started) afterwards. Yields the log file's path."""
    log_path = tmp / f"{name}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=tmp, env=server_env(tmp), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except urllib.error.HTTPError:  # it answered (a redirect to a login page, a 404): it is up
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not answer at {url} in {timeout:.0f} s:\n"
                                       f"{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        yield log_path
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)   # our own group: the server and its kernels
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                pass
        try:  # kernels that outlived the server in our group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()


@contextmanager
def browser_page():
    chromium = require_tool("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (pip install -e '.[browser]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            messages = []
            page.on("console", lambda m: messages.append(f"{m.type}: {m.text}") if m.type == "error" else None)
            page.console_errors = messages
            yield page
        finally:
            browser.close()


def screenshot_dir(tmp: Path) -> Path:
    d = Path(os.environ.get("PGVC_SCREENSHOT_DIR") or tmp / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def shoot(page, tmp: Path, name: str) -> Path:
    path = screenshot_dir(tmp) / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


# ---- the check both front ends share -------------------------------------------------------------------
def read_state(page) -> tuple[int, str]:
    text = page.locator(BYTES).first.inner_text()
    match = re.search(r"(\d+)\s*bytes", text)
    assert match, f"bytes label reads {text!r}"
    return int(match.group(1)), page.locator(FRAME).first.get_attribute("src")


def wait_for_change(page, before: tuple[int, str]):
    deadline = time.monotonic() + STEP_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        now = read_state(page)
        if now[0] != before[0] and now[1] != before[1]:
            return now
        page.wait_for_timeout(200)
    raise AssertionError(f"the bytes label or the picture did not change: before {before[0]} bytes, "
                         f"now {read_state(page)[0]} bytes")


def drive_truncation_explorer(page, tmp: Path, name: str, log_path: Path):
    try:
        page.locator(BYTES).first.wait_for(state="visible", timeout=WIDGET_TIMEOUT_MS)
        page.locator(FRAME).first.wait_for(state="visible", timeout=STEP_TIMEOUT_MS)
    except Exception:
        shoot(page, tmp, f"{name}_timeout")
        raise AssertionError(f"the truncation explorer did not appear in {name}; console errors: "
                             f"{page.console_errors[-5:]}\nserver log:\n{log_path.read_text()[-3000:]}")
    page.locator(FRAME).first.scroll_into_view_if_needed()
    full = read_state(page)
    assert full[1] and (full[1].startswith("blob:") or full[1].startswith("data:")), full[1]
    shoot(page, tmp, f"{name}_k_all")

    handle = page.locator(K_HANDLE).first
    handle.focus()
    handle.press("ArrowLeft")                  # one scale less
    fewer = wait_for_change(page, full)
    assert fewer[0] < full[0], f"fewer scales should send fewer bytes: {fewer[0]} vs {full[0]}"
    handle.press("Home")                       # k = 1
    one = wait_for_change(page, fewer)
    assert one[0] < fewer[0]
    shoot(page, tmp, f"{name}_k1")
    print(f"{name}: {full[0]} bytes (all scales) -> {fewer[0]} -> {one[0]} bytes (k=1)")


# ---- the tests ---------------------------------------------------------------------------------------
def truncation_notebook(tmp: Path) -> Path:
    """The course's truncation notebook, copied (JupyterLab saves what it runs); while it does not
    exist yet, a one-cell stand-in that shows the same explorer."""
    dest = tmp / "notebooks"
    dest.mkdir()
    import nbformat

    if TRUNCATION_NOTEBOOK.is_file():
        nb = nbformat.read(TRUNCATION_NOTEBOOK, as_version=4)
        nb.metadata["kernelspec"] = KERNELSPEC  # so JupyterLab starts it without asking
        path = dest / TRUNCATION_NOTEBOOK.name
        nbformat.write(nb, path)
        return path
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "from progvc_lab.viz import load_clip, load_demo_codec, truncation_explorer\n"
        "video, fps, label = load_clip('foreman', max_frames=8)\n"
        "truncation_explorer(load_demo_codec(), video)")]
    nb.metadata["kernelspec"] = KERNELSPEC
    path = dest / "truncation_standin.ipynb"
    nbformat.write(nb, path)
    return path


def run_all_cells(page, timeout: float = 120.0):
    """Run > Run All Cells, until a code cell shows it started ([*] or [1]). A click made while the
    notebook's kernel session is still connecting does nothing, so try again; accept the default in
    a "Select Kernel" dialog."""
    prompt = page.locator(".jp-CodeCell .jp-InputPrompt").first
    idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dialog = page.locator(".jp-Dialog")
        if dialog.count():
            text = dialog.first.inner_text()
            if "Select Kernel" not in text:
                raise AssertionError(f"JupyterLab shows a dialog: {text!r}")
            dialog.locator("button.jp-mod-accept").first.click()  # the default: Python 3
        if not idle.count():  # no kernel yet
            page.wait_for_timeout(500)
            continue
        page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        page.locator("li.lm-Menu-item[data-command='runmenu:run-all']").first.click()
        started = time.monotonic() + 10
        while time.monotonic() < started:
            if re.search(r"\[(\*|\d+)\]", prompt.inner_text()):
                return
            page.wait_for_timeout(250)
    raise AssertionError("Run > Run All Cells did not start the notebook")


def test_truncation_explorer_in_jupyterlab(tmp_path):
    require_tool("chromium")
    notebook = truncation_notebook(tmp_path)
    port = free_port()
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--ServerApp.token={TOKEN}", f"--ServerApp.root_dir={tmp_path}", "--ServerApp.port_retries=0",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    base = f"http://127.0.0.1:{port}"
    with server(cmd, f"{base}/api/status?token={TOKEN}", tmp_path, "jupyterlab") as log_path, browser_page() as page:
        rel = notebook.relative_to(tmp_path).as_posix()
        page.goto(f"{base}/lab/tree/{rel}?token={TOKEN}", timeout=60_000)
        page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=60_000)
        run_all_cells(page)
        drive_truncation_explorer(page, tmp_path, "jupyterlab", log_path)


def test_explorer_app_in_voila(tmp_path):
    require_tool("chromium")
    port = free_port()
    cmd = [sys.executable, "-m", "voila", str(EXPLORER_NOTEBOOK), "--no-browser", f"--port={port}",
           "--Voila.ip=127.0.0.1", "--Voila.port_retries=0", "--strip_sources=True"]
    base = f"http://127.0.0.1:{port}"
    # probe a static file: a GET of "/" would start a kernel and run the notebook
    with server(cmd, f"{base}/voila/static/voila.js", tmp_path, "voila") as log_path, browser_page() as page:
        page.goto(base, timeout=WIDGET_TIMEOUT_MS)
        drive_truncation_explorer(page, tmp_path, "voila", log_path)
        # the other tabs are built when first shown: open the masks tab and flip the mask
        page.get_by_role("tab", name="Masks").click()
        safe = page.locator(".pgvc-mask-summary .pgvc-safe").first
        safe.wait_for(state="visible", timeout=STEP_TIMEOUT_MS)
        assert safe.inner_text() == "yes"  # progvc_sparse
        assert page.locator(".pgvc-mask-summary .pgvc-violations").first.inner_text() == "0"
        picture_safe = page.locator("img.pgvc-mask-figure").first.get_attribute("src")
        page.locator(".pgvc-masks select").first.select_option("var")
        page.wait_for_function("() => document.querySelector('.pgvc-mask-summary .pgvc-safe')"
                               "?.textContent === 'no'", timeout=STEP_TIMEOUT_MS)
        # the safety highlighting: var's unsafe edges are counted and drawn (in red) in a new picture
        violations = int(page.locator(".pgvc-mask-summary .pgvc-violations").first.inner_text())
        assert violations > 0
        assert "red in the picture" in page.locator(".pgvc-mask-summary").first.inner_text()
        assert page.locator("img.pgvc-mask-figure").first.get_attribute("src") != picture_safe
        shoot(page, tmp_path, "voila_masks")
        assert page.get_by_text("import explorer_app").count() == 0, "Voila shows the notebook's code"
