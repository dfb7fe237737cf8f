"""Translation in the agent console, in a real headless Chromium, through the whole bridge:
a Chinese visitor on the widget, an English agent in the console, a fake LibreTranslate.
Screenshots land in tests/artifacts/."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, expect

from tests.fakes.translation_api import FakeTranslation
from tests.harness import running_bridge
from tests.test_widget_browser import (
    ARTIFACTS,
    WAIT_MS,
    Watch,
    browser,  # noqa: F401 - the fixture
    console_page,
    pytestmark,  # noqa: F401 - browser marks
    type_message,
    visitor_page,
    visitor_texts,
)
from tests.test_widget_protocol import ENV, widget_config

ZH = "你好，我的订单什么时候发货？我需要尽快知道。"
EN = "Hello, when will my order ship? I need to know soon."
REPLY = "It ships tomorrow morning."
REPLY_ZH = "明天早上发货。"


@pytest.fixture
async def translator() -> AsyncIterator[FakeTranslation]:
    async with FakeTranslation({(ZH, "en"): EN, (REPLY, "zh"): REPLY_ZH}) as server:
        yield server


async def test_the_agent_reads_and_answers_in_their_own_language(browser: Browser, redis_url: str,  # noqa: F811
                                                                  translator: FakeTranslation) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    config = {**widget_config(console={"poll_interval_s": 3600}),
              "translation": {"provider": "libretranslate", "base_url": translator.url, "timeout_s": 2}}
    async with running_bridge(redis_url, config, env=ENV) as b:
        watches: list[Watch] = []
        page = await visitor_page(browser, b, watches)
        console = await console_page(browser, b, watches, name="Ana")
        await type_message(page, ZH)
        row = console.locator("#list li[data-id]")
        await expect(row).to_have_count(1, timeout=WAIT_MS)
        await row.click()

        # the original, and under it the translation, pushed live
        customer = console.locator('#transcript li[data-who="customer"]')
        await expect(customer.locator(".text")).to_have_text([ZH], timeout=WAIT_MS)
        await expect(customer.locator(".translation")).to_have_text([EN], timeout=WAIT_MS)
        await expect(customer.locator(".translation-label")).to_have_text(["Translated from Chinese into English"])

        # the switch is on for a Chinese customer: the visitor reads Chinese
        await expect(console.locator("#translate-toggle")).to_be_visible()
        await expect(console.locator("#translate-toggle")).to_contain_text("Send in Chinese")
        await expect(console.locator("#translate-send")).to_be_checked()
        await console.locator("#reply-text").fill(REPLY)
        await console.locator("#reply-send").click()
        await expect(visitor_texts(page, "agent")).to_have_text([REPLY_ZH], timeout=WAIT_MS)

        # the agent sees their own words, and what the customer got
        agent = console.locator('#transcript li[data-who="agent"]')
        await expect(agent.locator(".text")).to_have_text([REPLY], timeout=WAIT_MS)
        await expect(agent.locator(".translation")).to_have_text([REPLY_ZH], timeout=WAIT_MS)
        await expect(agent.locator(".translation-label")).to_have_text(["Sent to the customer in Chinese:"])
        await console.screenshot(path=str(ARTIFACTS / "console-translation.png"))

        # switched off, a reply goes as written
        await console.locator("#translate-send").uncheck()
        await console.locator("#reply-text").fill("Tracking: SF123")
        await console.locator("#reply-send").click()
        await expect(visitor_texts(page, "agent")).to_have_text([REPLY_ZH, "Tracking: SF123"], timeout=WAIT_MS)

        # a failed translation: the original goes out, and the console says so
        translator.fail("429")
        await console.locator("#translate-send").check()
        await console.locator("#reply-text").fill("Thank you for waiting.")
        await console.locator("#reply-send").click()
        await expect(visitor_texts(page, "agent")).to_have_text([REPLY_ZH, "Tracking: SF123", "Thank you for waiting."],
                                                                timeout=WAIT_MS)
        await expect(console.locator('#transcript li[data-sent-as="original"] .translation.failed')).to_have_text(
            ["Translation unavailable (rate limited by the provider (HTTP 429)): sent as written"], timeout=WAIT_MS)

        # the visitor's history after a reload: what they got, never the agent's English
        await page.reload()
        if await page.locator(".bw-panel").is_hidden():
            await page.locator(".bw-bubble").click()
        await expect(visitor_texts(page, "agent")).to_have_text([REPLY_ZH, "Tracking: SF123", "Thank you for waiting."],
                                                                timeout=WAIT_MS)
        await page.screenshot(path=str(ARTIFACTS / "widget-translation.png"))
        for watch in watches:
            assert watch.dialogs == [] and watch.errors == [] and watch.foreign == []
        assert await b.bus.dead_letters() == []
