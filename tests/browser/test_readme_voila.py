"""The README's Voila command, typed literally, shows the demo workspace's assets in Chromium."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from browser_helpers import REPO, explain_failures, open_browser
from playwright.async_api import async_playwright

from comfyvn import demo

pytestmark = pytest.mark.browser


def readme_voila_command() -> str:
    """The one command of a ```bash block in README.md that serves the workbench with Voila."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)
    (command,) = [ln for block in blocks for ln in block.splitlines() if "voila" in ln.lower()
                  and not ln.lstrip().startswith("#") and "--workspace DIR" not in ln]
    return command.strip()


def test_readme_voila_command_opens_the_demo_workspace(tmp_path):
    """Run as a newcomer would, from the top of a checkout: relative paths, no COMFYVN_HOME set.

    The folder is a stand-in for the repository root (its ``.venv`` is this venv) so that the
    demo workspace the command seeds lands in the test's folder, not in the developer's checkout.
    """
    command = readme_voila_command()
    top = tmp_path / "checkout"
    top.mkdir()
    (top / ".venv").symlink_to(sys.prefix)
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYVN_HOME", "JUPYTER_TOKEN", "PYTHONPATH")}
    for var, sub in (("JUPYTER_CONFIG_DIR", "jconfig"), ("JUPYTER_RUNTIME_DIR", "jruntime"), ("IPYTHONDIR", "ipy")):
        (tmp_path / sub).mkdir()
        env[var] = str(tmp_path / sub)
    out = tmp_path / "launcher.log"
    with open(out, "wb") as log:
        proc = subprocess.Popen(["bash", "-c", command], cwd=top, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (url := re.search(r"open: (http://127\.0\.0\.1:\d+/\S*)", out.read_text(errors="replace"))):
            assert proc.poll() is None, f"{command!r} exited: {out.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no URL printed: {out.read_text()[-3000:]}"
            time.sleep(0.3)
        ws_root = top / "demo-workspace"
        assert (ws_root / "config" / "comfyvn.json").is_file()
        assert not (REPO / "notebooks" / "demo-workspace").exists()
        titles = set(demo.titles())

        async def scenario():
            async with async_playwright() as pw:
                browser, context = await open_browser(pw, height=1100)
                page = await context.new_page()
                page.set_default_timeout(90_000)
                async with explain_failures(page, tmp_path):
                    await page.goto(url.group(1))
                    await page.wait_for_selector(".cvn-tile img")
                    header = await page.text_content(".cvn-header")
                    assert str(ws_root) in header
                    await page.wait_for_function("n => document.querySelectorAll('.cvn-tile').length == n",
                                                 arg=len(titles))
                    shown = await page.eval_on_selector_all(".cvn-tile .cvn-name", "ns => ns.map(n => n.textContent)")
                    assert set(shown) == titles
                    # a confirmation appears where the person is looking, not below the page of tiles
                    await page.click(".cvn-btn-select-page")
                    await page.wait_for_function(
                        "document.querySelector('.cvn-gallery .cvn-status').textContent.includes('Selected the')")
                    box = await page.locator(".cvn-gallery .cvn-status").bounding_box()
                    assert box and box["y"] + box["height"] <= 1100, box
                await browser.close()

        asyncio.run(scenario())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the launcher and the Voila server it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
