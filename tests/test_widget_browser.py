"""The widget and the agent console in a real headless Chromium, through the whole bridge.

Debian's chromium is driven by Playwright with ``executable_path``; no browser is
downloaded. Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright, expect

from bridge.model import now_ms
from tests.harness import Clock, RunningBridge, running_bridge, wait_for
from tests.servers import free_port
from tests.test_widget_protocol import ENV, URGENT, customer_texts, widget_config
from tests.timing import scaled
from tests.widget_client import Tab

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
WAIT_MS = int(scaled(15_000))
HOSTILE = ['<img src=x onerror=alert(1)>', "<script>alert(2)</script>", '"><svg onload=alert(3)>',
           "&lt;b&gt;not bold&lt;/b&gt; & <b>bold?</b>"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed"),
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        chromium = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield chromium
        finally:
            await chromium.close()


class Watch:
    """Anything a hostile text could make the page do: dialogs, errors, foreign requests."""

    def __init__(self, page: Page, origin: str) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.foreign: list[str] = []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: None if r.url.startswith((origin, origin.replace("http", "ws"), "data:"))
                else self.foreign.append(r.url))


async def visitor_page(browser: Browser, b: RunningBridge, watches: list[Watch] | None = None) -> Page:
    context = await browser.new_context(locale="en-US", viewport={"width": 1100, "height": 760})
    page = await context.new_page()
    if watches is not None:
        watches.append(Watch(page, b.url))
    await page.goto(b.url + "/")
    await page.locator(".bw-bubble").click()
    await expect(page.locator(".bw-dot.on")).to_have_count(1, timeout=WAIT_MS)
    return page


async def second_tab(page: Page, b: RunningBridge) -> Page:
    tab = await page.context.new_page()
    await tab.goto(b.url + "/")  # the panel stays open in this browser session? it opens on click
    if await tab.locator(".bw-panel").is_hidden():
        await tab.locator(".bw-bubble").click()
    await expect(tab.locator(".bw-dot.on")).to_have_count(1, timeout=WAIT_MS)
    return tab


async def type_message(page: Page, text: str) -> None:
    await page.locator(".bw-input").fill(text)
    await page.locator(".bw-input").press("Enter")


async def console_page(browser: Browser, b: RunningBridge, watches: list[Watch] | None = None,
                       name: str = "") -> Page:
    """The console, logged in with the login link printed at start, or through the form as ``name``."""
    context = await browser.new_context(viewport={"width": 1280, "height": 760})
    page = await context.new_page()
    if watches is not None:
        watches.append(Watch(page, b.url))
    if name:
        await page.goto(b.url + "/agent")
        await page.locator("#login-token").fill("wrong token")
        await page.locator("#login-form button[type=submit]").click()
        await expect(page.locator("#login-error")).to_contain_text("wrong", timeout=WAIT_MS)
        await page.locator("#login-token").fill(ENV["T_CONSOLE_TOKEN"])
        await page.locator("#login-as").fill(name)
        await page.locator("#login-form button[type=submit]").click()
    else:
        await page.goto(b.url + "/agent#token=" + ENV["T_CONSOLE_TOKEN"])
    await expect(page.locator("#app")).to_be_visible(timeout=WAIT_MS)
    return page


def visitor_texts(page: Page, who: str) -> Any:
    return page.locator(f'.bw-msg[data-from="{who}"] .bw-text')


async def test_the_whole_loop_in_a_browser(browser: Browser, redis_url: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    # no polling in this run: whatever the console shows after it opened came live
    config = widget_config(console={"poll_interval_s": 3600})
    async with running_bridge(redis_url, config, env=ENV) as b:
        watches: list[Watch] = []
        page = await visitor_page(browser, b, watches)
        await type_message(page, URGENT)
        # the instant reply
        await expect(visitor_texts(page, "bot")).to_contain_text(["urgent"], timeout=WAIT_MS)
        await expect(visitor_texts(page, "visitor")).to_have_text([URGENT])

        # the agent sees it in the console, urgent, and answers
        console = await console_page(browser, b, watches, name="Ana")
        row = console.locator("#list li[data-urgency=urgent]")
        await expect(row).to_have_count(1, timeout=WAIT_MS)
        await expect(row).to_contain_text("urgent")
        await row.click()
        await expect(console.locator('#transcript li[data-who="customer"] .text')).to_have_text([URGENT])
        # the visitor writes again: the open console shows it live
        await type_message(page, "Line 3 is down too.")
        await expect(console.locator('#transcript li[data-who="customer"] .text')).to_have_text(
            [URGENT, "Line 3 is down too."], timeout=WAIT_MS)
        await expect(row.locator(".preview")).to_have_text("Line 3 is down too.")
        await console.locator("#reply-text").fill("Hello, this is Ana. A technician is on the way.")
        await console.locator("#reply-send").click()
        await expect(visitor_texts(page, "agent")).to_have_text(["Hello, this is Ana. A technician is on the way."],
                                                                timeout=WAIT_MS)
        await expect(page.locator('.bw-msg[data-from="agent"] .bw-name')).to_have_text(["Ana"])

        # a second tab shows the history; a later reply reaches both tabs live
        tab = await second_tab(page, b)
        await expect(visitor_texts(tab, "visitor")).to_have_text([URGENT, "Line 3 is down too."], timeout=WAIT_MS)
        await expect(visitor_texts(tab, "agent")).to_have_text(["Hello, this is Ana. A technician is on the way."])
        await console.locator("#reply-text").fill("He will be there at 3 pm.")
        await console.locator("#reply-send").click()
        for p in (page, tab):
            await expect(visitor_texts(p, "agent")).to_have_text(
                ["Hello, this is Ana. A technician is on the way.", "He will be there at 3 pm."], timeout=WAIT_MS)

        # a reload keeps the history, each message once
        await page.reload()
        if await page.locator(".bw-panel").is_hidden():
            await page.locator(".bw-bubble").click()
        await expect(visitor_texts(page, "agent")).to_have_text(
            ["Hello, this is Ana. A technician is on the way.", "He will be there at 3 pm."], timeout=WAIT_MS)
        await expect(visitor_texts(page, "visitor")).to_have_text([URGENT, "Line 3 is down too."])
        await expect(visitor_texts(page, "bot")).to_have_count(1)

        # the console shows the agent's words and the status; resolve, then reopen
        await expect(console.locator('#transcript li[data-who="agent"] .text')).to_have_text(
            ["Hello, this is Ana. A technician is on the way.", "He will be there at 3 pm."], timeout=WAIT_MS)
        # an internal note stays in the console
        await console.locator("#reply-text").fill("VIP customer, call the plant manager")
        await console.locator("#note-send").click()
        await expect(console.locator('#transcript li[data-who="note"] .text')).to_have_text(
            ["VIP customer, call the plant manager"], timeout=WAIT_MS)
        await console.screenshot(path=str(ARTIFACTS / "console.png"))
        await page.screenshot(path=str(ARTIFACTS / "widget.png"))
        await console.locator("#resolve").click()
        await expect(console.locator("#conv-meta .tag.resolved")).to_have_count(1, timeout=WAIT_MS)
        conversation = await b.store.for_address("widget", await _visitor(page))
        assert conversation is not None and conversation.status == "resolved"
        await console.locator("#reopen").click()
        await expect(console.locator("#conv-meta .tag.open")).to_have_count(1, timeout=WAIT_MS)
        await page.reload()
        await expect(visitor_texts(page, "agent")).to_have_count(2, timeout=WAIT_MS)
        assert "VIP customer" not in await page.locator(".bw-log").inner_text()
        for watch in watches:
            assert watch.dialogs == [] and watch.errors == [] and watch.foreign == []
        assert await b.bus.dead_letters() == []


async def _visitor(page: Page) -> str:
    token: str = await page.evaluate(
        "() => JSON.parse(localStorage.getItem(Object.keys(localStorage).find(k => k.endsWith(':token'))))")
    import base64
    import json

    payload = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["v"])


async def test_hostile_text_renders_literally(browser: Browser, redis_url: str) -> None:
    config = widget_config()
    config["flows"] = {"triage": {"multilingual": False}}  # a routine case: the list previews the customer's words
    async with running_bridge(redis_url, config, env=ENV) as b:
        watches: list[Watch] = []
        page = await visitor_page(browser, b, watches)
        for text in HOSTILE:
            await type_message(page, text)
        await expect(visitor_texts(page, "visitor")).to_have_text(HOSTILE, timeout=WAIT_MS)
        visitor = await _visitor(page)
        await wait_for(lambda: _all_stored(b, visitor), what="the hostile messages stored")

        console = await console_page(browser, b, watches)
        await console.locator("#list li").first.click()
        await expect(console.locator('#transcript li[data-who="customer"] .text')).to_have_text(HOSTILE,
                                                                                                 timeout=WAIT_MS)
        await console.locator("#claim").click()
        await expect(console.locator("#conv-meta")).to_contain_text("assigned to agent", timeout=WAIT_MS)
        await expect(console.locator("#list li .preview")).to_have_text([HOSTILE[-1]])
        await console.locator("#reply-text").fill(HOSTILE[0] + " " + HOSTILE[1])
        await console.locator("#reply-send").click()
        await expect(visitor_texts(page, "agent")).to_have_text([HOSTILE[0] + " " + HOSTILE[1]], timeout=WAIT_MS)
        # nothing was parsed as markup
        assert await page.locator(".bw-log img, .bw-log script, .bw-log svg, .bw-log b").count() == 0
        assert await console.locator("#transcript img, #transcript script, #transcript svg, #transcript b").count() == 0
        await page.screenshot(path=str(ARTIFACTS / "widget-hostile.png"))
        for watch in watches:
            assert watch.dialogs == [] and watch.errors == [] and watch.foreign == []


async def _all_stored(b: RunningBridge, visitor: str) -> bool:
    return len(await customer_texts(b, visitor)) == len(HOSTILE)


async def test_messages_typed_while_the_server_restarts_arrive_once(browser: Browser, redis_url: str) -> None:
    # a small burst, so the queue sent after the restart also meets the flood limit
    config = {**widget_config(limits={"message_burst": 3, "messages_per_minute": 300, "rejected_before_close": 3}),
              "http": {"port": free_port()}}
    offline = [f"typed while offline, {n}" for n in range(1, 9)]
    async with running_bridge(redis_url, config, env=ENV) as b:
        page = await visitor_page(browser, b)
        await type_message(page, "Hello before the restart")
        await expect(visitor_texts(page, "bot")).to_have_count(1, timeout=WAIT_MS)
        await expect(page.locator(".bw-state")).to_have_count(0)
        visitor = await _visitor(page)
    # the server is gone: the widget says so and keeps what the visitor types
    await expect(page.locator(".bw-status")).to_be_visible(timeout=WAIT_MS)
    for text in offline:
        await type_message(page, text)
    await expect(page.locator(".bw-state")).to_have_count(len(offline))
    await page.screenshot(path=str(ARTIFACTS / "widget-offline.png"))
    async with running_bridge(redis_url, config, env=ENV) as b:
        await expect(page.locator(".bw-state")).to_have_count(0, timeout=WAIT_MS)  # all acknowledged
        await expect(page.locator(".bw-dot.on")).to_have_count(1)
        expected = ["Hello before the restart", *offline]
        await wait_for(lambda: _stored(b, visitor, expected), what="the offline messages stored, in order")
        await expect(visitor_texts(page, "visitor")).to_have_text(expected)
        # a reload shows each exactly once too
        await page.reload()
        if await page.locator(".bw-panel").is_hidden():
            await page.locator(".bw-bubble").click()
        await expect(visitor_texts(page, "visitor")).to_have_text(expected, timeout=WAIT_MS)
        assert await customer_texts(b, visitor) == expected


async def _stored(b: RunningBridge, visitor: str, expected: list[str]) -> bool:
    return await customer_texts(b, visitor) == expected


def shop_page(bridge_url: str, **attributes: str) -> str:
    attrs = " ".join(f'data-{k.replace("_", "-")}="{v}"' for k, v in attributes.items())
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>Shop</title></head><body><h1>A shop</h1>'
            f'<script src="{bridge_url}/widget.js" async {attrs}></script></body></html>')


@contextlib.asynccontextmanager
async def shop_site(bridge_url: str, port: int, **attributes: str) -> AsyncIterator[str]:
    """Another site embedding the widget with one tag: its own server on another port."""
    html = shop_page(bridge_url, **attributes)

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://localhost:{port}"
    finally:
        await runner.cleanup()


async def site_page(browser: Browser, site: str, locale: str) -> Page:
    context = await browser.new_context(locale=locale, viewport={"width": 1100, "height": 760})
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    await page.goto(site + "/")
    await page.locator(".bw-bubble").click()
    return page


async def test_on_another_site_in_the_visitors_language_with_a_prechat_form(browser: Browser, redis_url: str) -> None:
    port = free_port()
    config = widget_config(allowed_origins=[f"http://localhost:{port}"])
    async with running_bridge(redis_url, config, env=ENV) as b, \
            shop_site(b.url, port, ask="name email", title="Магазин", color="#8250df") as site:
        page = await site_page(browser, site, "ru-RU")
        await expect(page.locator(".bw-title")).to_have_text("Магазин")
        await expect(page.locator(".bw-form")).to_be_hidden()
        await page.locator(".bw-name-input").fill("Иван")
        await page.locator(".bw-email-input").fill("ivan@example.com")
        await page.locator(".bw-start").click()
        await expect(page.locator(".bw-input")).to_have_attribute("placeholder", "Введите сообщение…")
        await expect(page.locator(".bw-dot.on")).to_have_count(1, timeout=WAIT_MS)
        await type_message(page, "Срочно! Линия остановилась, контроллеры не работают")
        await expect(visitor_texts(page, "bot")).to_have_count(1, timeout=WAIT_MS)
        await page.screenshot(path=str(ARTIFACTS / "widget-ru.png"))
        visitor = await _visitor(page)
        conversation = await wait_for(lambda: b.store.for_address("widget", visitor))
        (message,) = [m for m in await b.store.transcript(conversation.id) if m.kind == "customer"]
        assert message.sender is not None and message.sender.name == "Иван" and message.sender.language == "ru-RU"
        # the email is a claim: shown to agents as unconfirmed, never linked to a contact
        assert message.sender.email == "" and message.data["claimed_email"] == "ivan@example.com"
        console = await console_page(browser, b)
        await console.locator("#list li").first.click()
        await expect(console.locator("#conv-meta")).to_contain_text("ivan@example.com (unconfirmed)", timeout=WAIT_MS)
        # the agent made sure (asked for the order number, say), then links
        await console.locator("#link-email").click()
        await expect(console.locator("#conv-meta")).not_to_contain_text("unconfirmed", timeout=WAIT_MS)
        await expect(console.locator("#conv-meta")).to_contain_text("ivan@example.com")
        linked = await b.store.get(conversation.id)
        assert linked is not None
        contact = await b.store.contact(linked.contact_id)
        assert contact is not None and contact.email == "ivan@example.com"


async def test_a_site_not_on_the_allowlist_gets_no_connection(browser: Browser, redis_url: str) -> None:
    config = widget_config(allowed_origins=["http://shop.example"])
    async with running_bridge(redis_url, config, env=ENV) as b, shop_site(b.url, free_port()) as site:
        page = await site_page(browser, site, "en-US")
        await type_message(page, "let me in")
        await expect(page.locator(".bw-status")).to_contain_text("Offline", timeout=WAIT_MS)
        await expect(page.locator(".bw-dot.on")).to_have_count(0)
        await expect(page.locator(".bw-state")).to_have_text(["sending…"])
        assert await b.redis.keys("bridge:addr:widget:*") == []


async def test_a_survey_is_answered_with_a_button(browser: Browser, redis_url: str) -> None:
    config = {**widget_config(), "engine": {"steps": ["survey", "triage", "routing"]},
              "flows": {"survey": {"delay_min": 0}}}
    async with running_bridge(redis_url, config, env=ENV) as b:
        page = await visitor_page(browser, b)
        await type_message(page, "Do you ship to Malaysia?")
        await expect(visitor_texts(page, "bot")).to_have_count(1, timeout=WAIT_MS)
        visitor = await _visitor(page)
        conversation = await wait_for(lambda: b.store.for_address("widget", visitor))
        console = await console_page(browser, b, name="Ana")
        await console.locator("#list li").first.click()
        await console.locator("#reply-text").fill("Yes, in 3-5 days.")
        await console.locator("#reply-send").click()
        await expect(visitor_texts(page, "agent")).to_have_text(["Yes, in 3-5 days."], timeout=WAIT_MS)
        await console.locator("#resolve").click()
        choices = page.locator(".bw-choice")
        await expect(choices).to_have_text(["1", "2", "3", "4", "5"], timeout=WAIT_MS)
        await page.screenshot(path=str(ARTIFACTS / "widget-survey.png"))
        await choices.nth(4).click()
        await expect(choices.nth(0)).to_be_disabled()
        await wait_for(lambda: _survey_score(b, conversation.id), what="the survey score recorded")
        assert await _survey_score(b, conversation.id) == 5


async def _survey_score(b: RunningBridge, conversation_id: str) -> int:
    conversation = await b.store.get(conversation_id)
    survey = conversation.data.get("survey", {}) if conversation else {}
    return int(survey.get("score", 0))


async def test_a_visitor_attaches_a_photo_and_the_agent_opens_it(browser: Browser, redis_url: str,
                                                                 tmp_path: Path) -> None:
    photo = tmp_path / "burnt board.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + b"pixels" * 100)
    async with running_bridge(redis_url, widget_config(), env=ENV) as b:
        page = await visitor_page(browser, b)
        await expect(page.locator(".bw-attach")).to_be_visible(timeout=WAIT_MS)
        await page.locator(".bw-input").fill("This is how the board arrived")
        await page.locator(".bw-file-input").set_input_files(str(photo))
        link = page.locator('.bw-msg[data-from="visitor"] a.bw-file')
        await expect(link).to_have_text(["\U0001F4CE burnt board.png"], timeout=WAIT_MS)
        await expect(visitor_texts(page, "visitor")).to_have_text(["This is how the board arrived"])
        await page.screenshot(path=str(ARTIFACTS / "widget-attachment.png"))

        console = await console_page(browser, b, name="Ana")
        await console.locator("#list li").first.click()
        attachment = console.locator('#transcript li[data-who="customer"] a.attachment')
        await expect(attachment).to_have_count(1, timeout=WAIT_MS)
        await expect(attachment).to_contain_text("burnt board.png")
        href = await attachment.get_attribute("href")
        assert href is not None
        async with b.http.get(href.replace("http://localhost", "http://127.0.0.1")) as r:
            assert r.status == 200 and await r.read() == photo.read_bytes()


async def test_a_stale_login_link_explains_itself_and_sla_notices_read_once(browser: Browser,
                                                                            redis_url: str) -> None:
    clock = Clock(now_ms())
    config = {**widget_config(), "engine": {"steps": ["triage", "routing", "sla"]},
              "flows": {"sla": {"targets": {"urgent": {"first_response_min": 10, "resolution_h": 4},
                                            "routine": {"first_response_min": 240, "resolution_h": 48}}}}}
    async with running_bridge(redis_url, config, env=ENV, clock_ms=clock) as b:
        stale = await (await browser.new_context()).new_page()
        await stale.goto(b.url + "/agent#token=a-token-from-last-month")
        await expect(stale.locator("#login")).to_be_visible(timeout=WAIT_MS)
        await expect(stale.locator("#login-error")).to_contain_text("login link is wrong or out of date")
        await expect(stale.locator("#login-token")).to_be_visible()

        page = await visitor_page(browser, b)
        await type_message(page, URGENT)
        await expect(visitor_texts(page, "bot")).to_contain_text(["urgent"], timeout=WAIT_MS)

        async def notices() -> set[str]:
            conversations = await b.store.list()
            transcript = await b.store.transcript(conversations[0].id) if conversations else []
            return {m.name for m in transcript if m.name.startswith("sla_")}

        clock.advance(minutes=8.5)  # past 80% of the 10-minute first-response target
        await b.wait_for(lambda: _has(notices, "sla_warning"), what="the SLA warning")
        clock.advance(minutes=2)
        await b.wait_for(lambda: _has(notices, "sla_breach"), what="the SLA breach")
        console = await console_page(browser, b)
        await console.locator("#list li").first.click()
        warning = console.locator('#transcript li[data-event="sla_warning"]')
        await expect(warning).to_have_count(1, timeout=WAIT_MS)
        await expect(warning).to_contain_text("SLA warning: urgent first response due in")
        await expect(console.locator('#transcript li[data-event="sla_breach"]')).to_contain_text(
            "SLA breach: urgent first response target missed")
        await expect(console.locator("#transcript")).not_to_contain_text("SLA warning: SLA warning")
        await expect(console.locator("#transcript")).not_to_contain_text("SLA breach: SLA breach")


async def _has(notices: Any, name: str) -> bool:
    return name in await notices()


async def test_the_console_names_a_site_whose_widget_was_refused(browser: Browser, redis_url: str) -> None:
    async with running_bridge(redis_url, widget_config(allowed_origins=["https://shop.example"]), env=ENV) as b:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await Tab.connect(b.url, origin="https://blog.example")
        console = await console_page(browser, b)
        warning = console.locator("#origin-warning")
        await expect(warning).to_be_visible(timeout=WAIT_MS)
        await expect(warning).to_contain_text("refused on https://blog.example")
        await expect(warning).to_contain_text("channels.widget.allowed_origins")
        await console.screenshot(path=str(ARTIFACTS / "console-refused-origin.png"))
