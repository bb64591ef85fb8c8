"""The Licences tab of the workbench in Voila, driven in Debian's Chromium (issue 17)."""

from __future__ import annotations

import asyncio
import time

import pytest
from browser_helpers import explain_failures, open_browser, voila_server
from playwright.async_api import async_playwright

from comfyvn.studio.core.asset_registry import AssetRegistry

pytestmark = pytest.mark.browser


def count(verdict: str, n: int) -> str:
    return (f"document.querySelector('.cvn-licences-chart .cvn-lic-count[data-verdict={verdict}]')"
            f"?.textContent === '{n}'")


def test_licences_tab_chart_fix_unknowns_open_in_gallery_and_export(voila_env, seeded_ws, tmp_path):
    registry = AssetRegistry(ws=seeded_ws)
    unlicensed = {a["uid"] for a in registry.list_assets(license="")}
    assert len(unlicensed) == 2

    async def scenario():
        with voila_server("workbench", voila_env, tmp_path) as url:
            async with async_playwright() as pw:
                browser, context = await open_browser(pw, height=1300)
                page = await context.new_page()
                page.set_default_timeout(90_000)
                async with explain_failures(page, tmp_path):
                    await page.goto(url)
                    await page.wait_for_selector(".cvn-tile img")
                    tabs = await page.eval_on_selector_all(".cvn-tab .lm-TabBar-tab", "t => t.map(x => x.textContent)")
                    assert "Licences" in tabs  # the order of all tabs is pinned by test_dashboards_browser
                    await page.click(".cvn-tab .lm-TabBar-tab:has-text('Licences')")
                    await page.wait_for_selector(".cvn-licences .cvn-table tbody tr", state="visible")
                    # the chart: 3 cc0 (allowed), 3 cc-by (credit), 2 without a licence (unknown)
                    for verdict, n in (("allowed", 3), ("allowed_with_duties", 3), ("blocked", 0), ("unknown", 2)):
                        await page.wait_for_function(count(verdict, n))
                    assert "2 stop the release" in await page.text_content(".cvn-licences")

                    # bulk-fix the unknowns: select them, set a licence; the chart follows
                    await page.click(".cvn-licences-select-unknown")
                    await page.wait_for_selector(".cvn-licences .cvn-table tbody tr.selected >> nth=1")
                    await page.fill(".cvn-licences-licence input", "cc0-1.0")
                    await page.click(".cvn-licences-set")
                    await page.wait_for_function(count("unknown", 0))
                    await page.wait_for_function(count("allowed", 5))
                    assert {a["uid"] for a in registry.list_assets(license="cc0-1.0")} == unlicensed
                    assert "may ship" in await page.text_content(".cvn-licences")

                    # a row's reasons, then click through to the gallery
                    row = page.locator(".cvn-licences .cvn-table tbody tr").first
                    uid = await row.get_attribute("data-id")
                    path = registry.get_asset(uid)["path"]
                    await row.click()
                    await page.wait_for_selector(".cvn-licences-detail :text('credit:')")
                    await page.click(".cvn-licences-open")
                    await page.wait_for_selector(".cvn-tab .lm-TabBar-tab.lm-mod-current:has-text('Asset gallery')")
                    await page.wait_for_selector(f".cvn-detail-w :text('{path}')", state="visible")

                    # export the manifest from the tab
                    await page.click(".cvn-tab .lm-TabBar-tab:has-text('Licences')")
                    await page.click(".cvn-licences-export")
                    await page.wait_for_selector(".cvn-licences .cvn-msg.ok:has-text('Manifest written')")
                    manifest = seeded_ws.root / "release" / "licences-default-commercial.md"
                    deadline = time.monotonic() + 10
                    while not manifest.is_file():
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.1)
                    assert "Creative Commons Attribution 4.0 International Public License" in manifest.read_text()
                await browser.close()

    asyncio.run(scenario())
