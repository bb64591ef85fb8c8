"""The asset gallery in Voila, driven in Chromium: thumbnails, filter, multi-select + tag, live, clipboard."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time

import pytest
from browser_helpers import ASSETS, explain_failures, open_browser, picture, voila_server
from playwright.async_api import async_playwright

from comfyvn.studio.core.asset_registry import AssetRegistry

pytestmark = pytest.mark.browser

VISIBLE_IMGS_LOADED = """() => {
  const imgs = Array.from(document.querySelectorAll('.cvn-tile img')).filter(i => i.style.display !== 'none');
  return {shown: imgs.length, loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
          tiles: document.querySelectorAll('.cvn-tile').length};
}"""


async def wait_for(fn, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = await fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def test_gallery_in_voila(voila_env, seeded_ws, tmp_path):
    registry = AssetRegistry(ws=seeded_ws)
    characters = [a for a in ASSETS if a[0] == "characters"]

    async def scenario():
        with voila_server("gallery", voila_env, tmp_path) as url:
            async with async_playwright() as pw:
                browser, context = await open_browser(pw, clipboard=True, height=1250)
                page = await context.new_page()
                page.set_default_timeout(90_000)
                async with explain_failures(page, tmp_path):
                    await page.goto(url)
                    await page.wait_for_selector(".cvn-tile img")

                    # 1. thumbnails: every visible tile image decoded with a real width
                    state = await wait_for(
                        lambda: _loaded(page, len(ASSETS)), what="all thumbnails decoded")
                    assert state["tiles"] == len(ASSETS) == state["loaded"]
                    await page.evaluate("window.__noReload = 'still here'")
                    # the gallery's page CSS (it rides on the grid's stylesheet) applies; widgets sharing one
                    # Layout model keep their own sizes
                    assert await page.evaluate(
                        "getComputedStyle(document.querySelector('.cvn-gallery .cvn-side')).minWidth") == "300px"
                    assert await page.evaluate("getComputedStyle(document.querySelector('.cvn-pager-label'))"
                                               ".fontVariantNumeric") == "tabular-nums"
                    widths = await page.evaluate("""() => ['type', 'license', 'rights', 'text'].map(
                        k => getComputedStyle(document.querySelector('.cvn-filter-' + k)).width)""")
                    assert widths == ["200px", "210px", "210px", "260px"], widths

                    # 2. a filter narrows the grid
                    await page.select_option(".cvn-filter-type select", label=f"characters ({len(characters)})")
                    await wait_for(lambda: _tile_count(page, len(characters)), what="the filtered grid")
                    names = await page.eval_on_selector_all(".cvn-tile .cvn-name", "ns => ns.map(n => n.textContent)")
                    assert sorted(names) == sorted(a[5]["title"] for a in characters)

                    # 3. select two assets (click, Ctrl-click) and add a tag: sidecars change on disk
                    tiles = await page.query_selector_all(".cvn-tile")
                    uids = [await t.get_attribute("data-uid") for t in tiles[:2]]
                    await tiles[0].click()
                    await tiles[1].click(modifiers=["Control"])
                    await page.wait_for_selector(".cvn-tile.selected >> nth=1")
                    await page.fill(".cvn-bulk-add-tags input", "reviewed, expression sheet")
                    await page.click(".cvn-bulk-apply")
                    await page.wait_for_selector(".cvn-status .cvn-msg.ok")

                    def sidecar_tags(uid: str) -> list[str]:
                        rec = registry.get_asset(uid)
                        return json.loads(registry.sidecar_path_for(rec["path"]).read_text("utf-8"))["tags"]

                    deadline = time.monotonic() + 10
                    while not all({"reviewed", "expression sheet"} <= set(sidecar_tags(u)) for u in uids):
                        assert time.monotonic() < deadline, "sidecars on disk did not get the tags"
                        await asyncio.sleep(0.1)
                    # the tiles show the chips that fit and "+N" for the rest, all of them in the tooltip
                    await page.wait_for_selector(".cvn-tile.selected .cvn-tag-more >> nth=1")
                    more = await page.eval_on_selector_all(
                        ".cvn-tile.selected .cvn-tags",
                        "ts => ts.map(t => [t.querySelectorAll('.cvn-tag:not(.cvn-tag-more)').length,"
                        " t.querySelector('.cvn-tag-more').textContent, t.title])")
                    for shown, plus, tooltip in more:
                        assert plus == f"+{4 - shown}" and "expression sheet" in tooltip
                    others = [r["uid"] for r in registry.list_assets() if r["uid"] not in uids]
                    assert not any("reviewed" in sidecar_tags(u) for u in others)

                    # 4. Copy Debug JSON puts UTF-8 JSON of the selection on the clipboard
                    await page.click(".cvn-clip-btn")
                    await page.wait_for_function("document.querySelector('.cvn-status').textContent.includes('Copied')")
                    copied = json.loads(await page.evaluate("navigator.clipboard.readText()"))
                    assert sorted(a["uid"] for a in copied["assets"]) == sorted(uids)
                    [mika] = [a for a in copied["assets"] if a["path"].endswith("mika_surprised.png")]  # newest first
                    assert mika["meta"]["voice"] == {"lang": "de", "lines": ["Oh!", "Wirklich?"]}
                    assert mika["meta"]["title"] == "Mika – überrascht ★"
                    assert all("reviewed" in a["tags"] for a in copied["assets"])

                    # a browser that refuses the clipboard gets the JSON in a visible, selected text box
                    await page.evaluate("""() => {
                      navigator.clipboard.writeText = () => Promise.reject(new Error('denied by policy'));
                      document.execCommand = () => false;
                    }""")
                    await page.click(".cvn-clip-btn")
                    box = page.locator(".cvn-clip-fallback textarea")
                    await box.wait_for(state="visible")
                    shown = json.loads(await box.input_value())
                    assert sorted(a["uid"] for a in shown["assets"]) == sorted(uids)
                    assert await page.evaluate("document.activeElement.tagName") == "TEXTAREA"
                    await page.wait_for_function(
                        "document.querySelector('.cvn-status').textContent.includes('Ctrl+C')")
                    await page.click(".cvn-clip-close")
                    await box.wait_for(state="hidden")

                    # 5. an asset registered by another process appears without a reload
                    src = picture(tmp_path / "newcomer.png", "characters", ("#ff006e", "#fb5607"), 42)
                    code = textwrap.dedent(f"""
                        from comfyvn.studio.core.asset_registry import AssetRegistry
                        r = AssetRegistry()
                        rec = r.register_file({str(src)!r}, "characters", metadata={{"title": "Newcomer"}},
                                              tags="sprite, new")
                        r.wait_for_thumbnails(30)
                        print(rec["uid"])
                    """)
                    out = subprocess.run([sys.executable, "-c", code], env=voila_env, capture_output=True, text=True,
                                         timeout=60, check=True)
                    new_uid = out.stdout.strip().splitlines()[-1]
                    await page.wait_for_selector(f'.cvn-tile[data-uid="{new_uid}"] img', state="visible")
                    await wait_for(lambda: _loaded(page, len(characters) + 1), what="the newcomer's thumbnail")
                    assert await page.evaluate("window.__noReload") == "still here"
                    assert await page.eval_on_selector_all(".cvn-tile.selected", "ns => ns.length") == 2

                    await page.click(f'.cvn-tile[data-uid="{uids[0]}"]', modifiers=["Control"])  # keep 1 selected
                    await page.click(f'.cvn-tile[data-uid="{uids[0]}"]', modifiers=["Control"])
                    await page.wait_for_selector(".cvn-detail-img")
                    await page.click("button:has-text('Reset filters')")
                    await wait_for(lambda: _loaded(page, len(ASSETS) + 1), what="the unfiltered grid")
                await browser.close()

    asyncio.run(scenario())


async def _loaded(page, expected: int):
    state = await page.evaluate(VISIBLE_IMGS_LOADED)
    return state if state["tiles"] == expected and state["loaded"] == expected else None


async def _tile_count(page, expected: int) -> bool:
    return await page.eval_on_selector_all(".cvn-tile", "ns => ns.length") == expected
