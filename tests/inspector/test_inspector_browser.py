"""The shard browser in headless Chromium (Debian's package, driven by Playwright for Python).

Opens the page with a token, filters, opens a triple, flags it, checks the flag file, and
saves screenshots to test-artifacts/ (CAFE_TEST_ARTIFACTS moves it). Skips when Debian's
chromium is missing: `make browser-deps` installs it (`make test` runs that first).
Playwright's own browser download (`playwright install`) is never used.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from inspector_sets import TOKEN, real_triples, triple
from live_server import serve_in_thread

from cafe_core import InputStatus, ShardSet
from cafe_core.flags import read_flags
from cafe_inspector import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("CAFE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.is_file(),
        reason=f"Debian's chromium is not installed at {CHROMIUM}: run `make browser-deps` "
        "(apt-get install -y chromium) to run the browser tests",
    ),
]


def write_many(root: Path) -> None:
    """60 samples, half of them blue mugs: more than one page of cards."""
    with ShardSet(root).writer(max_samples=25, fsync=False) as writer:
        for i in range(60):
            t = triple(300 + i, "blue mug" if i % 2 else "red cube", (i % 10) / 10)
            writer.add(InputStatus.ok(t.metadata["source"]["input_key"]), [t])


@pytest.fixture
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: `make install`")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            yield page
        finally:
            browser.close()


def test_filter_open_and_flag_a_triple(served: Path, browser_page) -> None:
    page = browser_page
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda msg: msg.type == "error" and problems.append(f"console: {msg.text}"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    cube_keys = [t.key for t in real_triples() if t.metadata["subject"] == "red cube"]

    write_many(served / "many")
    with serve_in_thread(create_app(served, token=TOKEN)) as url:
        # The token in the address becomes a cookie; the page then loads the first set ("big").
        page.goto(f"{url}/?token={TOKEN}&set=real")
        assert "token" not in page.url
        page.wait_for_selector(".card img")
        assert page.locator("#set-select").input_value() == "real"
        assert page.locator(".card").count() == 10
        assert "1–10 of 10" in page.locator("#page-info").inner_text()

        # Filter: subject "cube" and box >= 0.4 -> the cubes 5, 7, 9.
        page.fill("#f-subject", "cube")
        page.fill("#f-score-box-min", "0.4")
        page.click("#apply")
        page.wait_for_function("document.querySelector('#page-info').textContent.includes('of 3')")
        shown = page.locator(".card").evaluate_all("cards => cards.map(c => c.dataset.key)")
        assert shown == cube_keys[2:]
        # every thumbnail of the page loaded as an image
        page.wait_for_function(
            "[...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth > 0)"
        )

        # Open the first triple, flag it.
        target = shown[0]
        page.click(f".card[data-key='{target}']")
        page.wait_for_selector("#detail[open]")
        assert "red cube" in page.locator("#d-prompt").inner_text()
        assert target in page.locator("#d-title").inner_text()
        page.wait_for_function("document.querySelector('#d-overlay').naturalWidth > 0")
        page.select_option("#flag-preset", "mask misses the subject")
        page.fill("#flag-reason", "cuts off a corner")
        page.click("#flag-button")
        page.wait_for_function("document.querySelector('#d-flag-state').textContent.startsWith('Flagged')")
        page.screenshot(path=str(ARTIFACTS / "inspector-detail.png"))

        flags = read_flags(served / "real")
        assert [(f.key, f.reason) for f in flags] == [(target, "mask misses the subject: cuts off a corner")]

        # Back on the grid the card is marked, and the summary counts the flag.
        page.click("#detail-close")
        page.wait_for_selector(f".card.flagged[data-key='{target}']")
        assert "1 flagged" in " ".join(page.locator("#set-summary").inner_text().split())
        page.screenshot(path=str(ARTIFACTS / "inspector.png"), full_page=True)

        # The inputs tab lists status rows with their reasons.
        page.click("#tab-inputs")
        page.select_option("#i-status", "skipped")
        page.click("#i-apply")
        page.wait_for_function("document.querySelector('#i-page-info').textContent.includes('of 2')")
        rows = page.locator("#input-table tbody tr").all_inner_texts()
        assert any("decode.truncated" in r for r in rows) and any("gate.mask_area" in r for r in rows)
        page.screenshot(path=str(ARTIFACTS / "inspector-inputs.png"))

        # A set larger than a page: Next pages on, and a filter's total arrives from the count request.
        page.click("#tab-triples")
        page.select_option("#set-select", "many")
        page.wait_for_function("document.querySelector('#page-info').textContent === '1–24 of 60'")
        page.click("#next")
        page.wait_for_function("document.querySelector('#page-info').textContent === '25–48 of 60'")
        page.fill("#f-subject", "mug")
        page.click("#apply")
        page.wait_for_function("document.querySelector('#page-info').textContent === '1–24 of 30'")
        page.click("#reset-filters")
        page.wait_for_function("document.querySelector('#page-info').textContent === '1–24 of 60'")

        # The stats tab draws the distributions, flags left out.
        page.click("#tab-stats")
        page.wait_for_selector(".stats-grid .bars")
        assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()

    assert problems == []
    assert (ARTIFACTS / "inspector.png").stat().st_size > 10_000
