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
from browser_helpers import REPO, UPDATE_SCREENSHOTS, explain_failures, open_browser, screenshot_dir
from playwright.async_api import async_playwright

from comfyvn import demo

pytestmark = pytest.mark.browser


def readme_voila_command() -> str:
    """The one command of a ```bash block in README.md that serves the workbench with Voila."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)
    (command,) = [ln for block in blocks for ln in block.splitlines() if "voila" in ln.lower()
                  and not ln.lstrip().startswith("#") and "--workspace DIR" not in ln]
    return command.strip()


# the visible tab's content has rendered: its pictures decoded, its tables filled, some text shown
TAB_RENDERED = """() => {
  const shown = el => el.offsetParent !== null;
  const panels = Array.from(document.querySelectorAll('.cvn-tab > .widget-tab-contents > *')).filter(shown);
  if (panels.length !== 1) return false;
  const panel = panels[0];
  const imgs = Array.from(panel.querySelectorAll('img')).filter(shown);
  const tables = Array.from(panel.querySelectorAll('.cvn-table')).filter(shown);
  // a table has rows, or says why it has none (its own empty text, not the default shown while loading)
  const said = t => Array.from(t.parentElement.querySelectorAll('.cvn-table-empty'))
    .some(e => shown(e) && e.textContent.trim() && e.textContent.trim() !== 'Nothing to show.');
  return imgs.every(i => i.complete && i.naturalWidth > 0) && tables.every(t => t.querySelector('tbody tr') || said(t))
    && !panel.querySelector('.cvn-failed') && panel.innerText.trim().length > 0;
}"""


def tab_file(label: str) -> str:
    """``Asset gallery`` -> ``asset-gallery.png``."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") + ".png"


async def screenshot_every_tab(page, folder) -> list[str]:
    """Visit each tab the workbench shows and save one screenshot per tab once it has rendered."""
    labels = await page.eval_on_selector_all(".cvn-tab .lm-TabBar-tab", "ts => ts.map(t => t.textContent.trim())")
    assert {"Asset gallery", "Ingest queue", "Sidecar enforcer", "Hook monitor"} <= set(labels), labels
    await page.evaluate("window.scrollTo(0, 0)")
    width, saved = page.viewport_size["width"], []
    for i, label in enumerate(labels):
        await page.click(f".cvn-tab .lm-TabBar-tab >> nth={i}")
        await page.wait_for_function(TAB_RENDERED)
        if label == "Hook monitor":  # show an event's envelope, as a person would
            await page.click(".cvn-hooks .cvn-table tbody tr >> nth=0")
            await page.wait_for_selector(".cvn-hooks .cvn-pre", state="visible")
        await page.wait_for_function(TAB_RENDERED)
        # Voila's page scrolls inside its own container: size the window to the tab's content
        bottom = await page.evaluate("""() => {
          const panel = Array.from(document.querySelectorAll('.cvn-tab > .widget-tab-contents > *'))
            .find(p => p.offsetParent !== null);
          return Math.ceil(panel.getBoundingClientRect().top + window.scrollY + panel.scrollHeight);
        }""")
        await page.set_viewport_size({"width": width, "height": max(600, min(2400, bottom + 24))})
        await page.wait_for_function(TAB_RENDERED)
        await page.screenshot(path=str(folder / tab_file(label)), full_page=True)
        saved.append(tab_file(label))
    return saved


def test_readme_voila_command_opens_the_demo_workspace(tmp_path):
    """Run as a newcomer would, from the top of a checkout: relative paths, no COMFYVN_HOME set.

    The folder is a stand-in for the repository root (its ``.venv`` is this venv) so that the
    demo workspace the command seeds lands in the test's folder, not in the developer's checkout.
    Then one screenshot per workbench tab: into docs/img with ``COMFYVN_UPDATE_SCREENSHOTS=1``
    (see CONTRIBUTING.md), else into this test's folder.
    """
    command = readme_voila_command()
    started = time.time()
    top = tmp_path / "comfyvn"  # the checkout (its name shows in the screenshots' workspace path)
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
                    await page.click(".cvn-gallery .cvn-btn-clear")  # screenshots without a selection
                    await page.wait_for_function("!document.querySelector('.cvn-tile.selected')")
                    folder = screenshot_dir(tmp_path)
                    saved = await screenshot_every_tab(page, folder)
                    assert all((folder / name).stat().st_size > 10_000 for name in saved), saved
                    if os.environ.get(UPDATE_SCREENSHOTS) != "1":
                        assert not any((REPO / "docs" / "img" / name).stat().st_mtime > started
                                       for name in saved if (REPO / "docs" / "img" / name).exists())
                await browser.close()

        asyncio.run(scenario())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the launcher and the Voila server it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_the_docs_show_screenshots_that_exist():
    """Every docs/img picture the README and docs/DASHBOARDS.md show is there (a renamed tab or a
    screenshot re-taken under a new name breaks no image)."""
    shown = {}
    for doc in (REPO / "README.md", REPO / "docs" / "DASHBOARDS.md"):
        for ref in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", doc.read_text(encoding="utf-8")):
            shown[ref] = (doc.parent / ref).resolve()
    assert shown and all(path.is_file() for path in shown.values()), shown
    assert {path.name for path in shown.values()} >= {tab_file(t) for t in ("Asset gallery", "Ingest queue",
                                                                             "Sidecar enforcer", "Hook monitor")}
