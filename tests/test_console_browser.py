"""The console as a work queue, in a real headless Chromium through the whole bridge: the
list (the customer's last words, waiting, SLA due, order), search, filters, unread counts
and keyboard shortcuts; display names as the customer sees them in the widget; canned
replies in the conversation's language; who else views or types in a case.

Screenshots land in tests/artifacts/ (ignored by git), as for tests/test_widget_browser.py.
"""

from __future__ import annotations

import re
import shutil
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from bridge import keys
from tests.harness import RunningBridge, running_bridge
from tests.servers import free_port
from tests.test_console_queue import ANA_PASSWORD, ENV, customer_messages, queue_config
from tests.test_widget_browser import ARTIFACTS, CHROMIUM, WAIT_MS, Watch, browser, type_message, visitor_texts
from tests.test_widget_protocol import URGENT, open_tab, tabs
from tests.widget_client import Tab

__all__ = ["browser", "tabs"]  # fixtures

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed"),
]

CANNED = {"en": [{"name": "Shipping times", "text": "We ship within 3-5 working days."}],
          "ru": [{"name": "Сроки доставки", "text": "Мы отправляем заказ в течение 3-5 рабочих дней."},
                 {"name": "Спасибо", "text": "Спасибо, что написали нам!"}]}


async def console_as(browser: Browser, b: RunningBridge, watches: list[Watch], *, name: str,
                     password: str = "") -> Page:
    """A console logged in through the form: with a password, or with the token as ``name``."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    watches.append(Watch(page, b.url))
    await page.goto(b.url + "/agent")
    if password:
        await page.locator("#login-name").fill(name)
        await page.locator("#login-password").fill(password)
    else:
        await page.locator("#login-token").fill(ENV["T_CONSOLE_TOKEN"])
        await page.locator("#login-as").fill(name)
    await page.locator("#login-form button[type=submit]").click()
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#live.on")).to_have_count(1)
    return page


async def case(b: RunningBridge, tabs: list[Tab], *texts: str, language: str = "en-US") -> str:
    """A visitor (over the widget's protocol) writes ``texts``; the conversation id once
    every message is stored and the SLA clock runs."""
    tab = await open_tab(tabs, b, hello={"language": language})
    welcome = await tab.welcome()
    for n, text in enumerate(texts):
        await tab.say(f"m{n}", text)
        conversation = await b.wait_for(lambda: b.store.for_address("widget", welcome["visitor"]), what="the case")
        await b.wait_for(lambda c=conversation, n=n: customer_messages(b, c.id, n + 1), what="stored")
    await b.wait_for(lambda: _sla(b, conversation.id), what="the SLA clock")
    return str(conversation.id)


async def _sla(b: RunningBridge, conversation_id: str) -> bool:
    conversation = await b.store.get(conversation_id)
    return conversation is not None and bool((conversation.data.get("sla") or {}).get("first_response_due_ms"))


def row(page: Page, conversation_id: str) -> Any:
    return page.locator(f'#list li[data-id="{conversation_id}"]')


def no_trouble(watches: list[Watch]) -> None:
    for watch in watches:
        assert watch.dialogs == [] and watch.errors == [] and watch.foreign == []


async def test_the_queue_sorted_filtered_searched_and_worked_from_the_keyboard(
        browser: Browser, redis_url: str, tabs: list[Tab]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    async with running_bridge(redis_url, queue_config(), env=ENV) as b:
        routine = await case(b, tabs, "Do you ship to Malaysia?", "And how long does it take?")
        urgent = await case(b, tabs, URGENT)
        russian = await case(b, tabs, "Здравствуйте, где мой заказ?", language="ru-RU")
        watches: list[Watch] = []
        page = await console_as(browser, b, watches, name="Bob")
        rows = page.locator("#list li")
        # urgent first, then by due time; the customer's words, not the bot's acknowledgement
        await expect(rows).to_have_count(3)
        assert [await r.get_attribute("data-id") for r in await rows.all()] == [urgent, routine, russian]
        await expect(rows.locator(".preview")).to_have_text(
            [URGENT, "And how long does it take?", "Здравствуйте, где мой заказ?"])
        for r in await rows.all():
            await expect(r.locator(".waiting")).to_have_text(re.compile(r"^waiting \d+s$"))
        await expect(row(page, urgent).locator(".due")).to_have_text(re.compile(r"^reply due in 1[45]m$"))
        await expect(row(page, routine).locator(".due")).to_have_text(re.compile(r"^reply due in 2[34]h( \d+m)?$"))
        await expect(rows.locator(".unread")).to_have_text(["1", "2", "1"])
        await page.screenshot(path=str(ARTIFACTS / "console-queue.png"))

        # filters
        await page.locator("#f-language").select_option("ru")
        await expect(rows).to_have_count(1)
        await expect(row(page, russian)).to_have_count(1)
        await page.locator("#f-language").select_option("")
        await expect(rows).to_have_count(3)
        await page.locator("#filters button[data-status=resolved]").click()
        await expect(rows).to_have_text(["Nothing here."])
        await page.locator("#filters button[data-status=active]").click()
        await expect(rows).to_have_count(3)

        # search, from the keyboard: a word of an earlier message of the routine case
        await page.keyboard.press("/")
        await expect(page.locator("#search")).to_be_focused()
        await page.keyboard.type("malaysia")
        await expect(rows).to_have_count(1)
        await expect(row(page, routine).locator(".preview")).to_have_text("Do you ship to Malaysia?")
        await page.screenshot(path=str(ARTIFACTS / "console-search.png"))
        await page.keyboard.press("Escape")
        await expect(rows).to_have_count(3)

        # j / k move through the queue and open the case; its unread count goes
        await page.keyboard.press("j")
        await expect(page.locator("#list li.selected")).to_have_attribute("data-id", urgent)
        await expect(page.locator("#conversation")).to_have_attribute("data-id", urgent)
        await page.keyboard.press("j")
        await expect(page.locator("#conversation")).to_have_attribute("data-id", routine)
        await expect(row(page, routine).locator(".unread")).to_have_count(0)
        await page.keyboard.press("k")
        await expect(page.locator("#conversation")).to_have_attribute("data-id", urgent)
        await expect(page.locator("#conv-meta .due")).to_have_text(re.compile(r"^reply due in 1[45]m$"))
        await page.keyboard.press("?")
        await expect(page.locator("#help")).to_be_visible()
        await expect(page.locator("#help")).to_contain_text("next / previous conversation")
        await page.screenshot(path=str(ARTIFACTS / "console-help.png"))
        await page.keyboard.press("Escape")
        await expect(page.locator("#help")).to_be_hidden()
        # c claims; the agent filter then finds it
        await page.keyboard.press("c")
        await expect(page.locator("#conv-meta")).to_contain_text("assigned to Bob")
        await page.locator("#f-agent").select_option("Bob")
        await expect(rows).to_have_count(1)
        await page.locator("#f-agent").select_option("-")
        await expect(rows).to_have_count(2)
        await page.locator("#f-agent").select_option("")
        # r goes to the reply box; e resolves (the case leaves the active list)
        await page.keyboard.press("r")
        await expect(page.locator("#reply-text")).to_be_focused()
        await page.keyboard.press("Escape")
        await page.keyboard.press("e")
        await expect(page.locator("#conv-meta .tag.resolved")).to_have_count(1)
        await expect(rows).to_have_count(2)
        # a new message is unread again in the list
        tab = tabs[0]
        await tab.say("again", "Hello? Anyone?")
        await expect(row(page, routine).locator(".unread")).to_have_text("1")
        await expect(row(page, routine).locator(".preview")).to_have_text("Hello? Anyone?")
        no_trouble(watches)


async def test_display_names_and_canned_replies_in_the_customers_language(
        browser: Browser, redis_url: str, tabs: list[Tab]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    async with running_bridge(redis_url, queue_config(canned_replies=CANNED), env=ENV) as b:
        watches: list[Watch] = []
        context = await browser.new_context(locale="ru-RU", viewport={"width": 1100, "height": 760})
        context.set_default_timeout(WAIT_MS)
        visitor = await context.new_page()
        watches.append(Watch(visitor, b.url))
        await visitor.goto(b.url + "/")
        await visitor.locator(".bw-bubble").click()
        await expect(visitor.locator(".bw-dot.on")).to_have_count(1)
        await type_message(visitor, "Здравствуйте, где мой заказ?")
        await expect(visitor_texts(visitor, "bot")).to_have_count(1)
        english = await case(b, tabs, "Where is my order?")

        console = await console_as(browser, b, watches, name="ana", password=ANA_PASSWORD)
        await expect(console.locator("#me")).to_have_text("Ana Lima")
        await expect(console.locator("#me-initials")).to_have_text("AL")
        await console.locator(f'#list li[data-id]:not([data-id="{english}"])').click()
        # the conversation's language first, then the others
        canned = console.locator("#canned")
        await expect(canned.locator("optgroup").first).to_have_attribute("label", "ru")
        await expect(canned.locator("option")).to_have_text(
            ["Canned reply…", "Сроки доставки", "Спасибо", "Shipping times"])
        await console.locator("#reply-text").fill("Добрый день! ")
        await canned.select_option(label="Сроки доставки")
        await expect(console.locator("#reply-text")).to_have_value(
            "Добрый день! Мы отправляем заказ в течение 3-5 рабочих дней.")
        await expect(console.locator("#reply-text")).to_be_focused()
        await console.screenshot(path=str(ARTIFACTS / "console-canned.png"))
        await console.locator("#reply-send").click()
        # the customer sees the display name, never the login
        await expect(visitor_texts(visitor, "agent")).to_have_text(
            ["Добрый день! Мы отправляем заказ в течение 3-5 рабочих дней."])
        await expect(visitor.locator('.bw-msg[data-from="agent"] .bw-name')).to_have_text(["Ana Lima"])
        assert "ana" not in (await visitor.locator(".bw-log").inner_text()).lower().replace("ana lima", "")
        await visitor.screenshot(path=str(ARTIFACTS / "widget-display-name.png"))
        await expect(console.locator('#transcript li[data-who="agent"] .by')).to_contain_text(["Ana Lima"])
        # an English case offers the English replies first
        await console.locator(f'#list li[data-id="{english}"]').click()
        await expect(canned.locator("optgroup").first).to_have_attribute("label", "en")
        await expect(canned.locator("option")).to_have_text(
            ["Canned reply…", "Shipping times", "Сроки доставки", "Спасибо"])
        no_trouble(watches)


async def test_who_else_views_or_types_in_a_case(browser: Browser, redis_url: str, tabs: list[Tab]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    async with running_bridge(redis_url, queue_config(), env=ENV) as b:
        first = await case(b, tabs, "Do you ship to Malaysia?")
        second = await case(b, tabs, "Where is my invoice?")
        watches: list[Watch] = []
        ana = await console_as(browser, b, watches, name="ana", password=ANA_PASSWORD)
        bob = await console_as(browser, b, watches, name="Bob")
        await row(ana, first).click()
        await row(bob, first).click()
        await expect(bob.locator("#presence .viewer")).to_have_text(["ALAna Lima is viewing"])
        await expect(ana.locator("#presence .viewer")).to_have_text(["BBob is viewing"])
        await expect(bob.locator("#presence .viewer .initials")).to_have_text(["AL"])
        # in the list too: who is in which case
        await expect(bob.locator(f'#list li[data-id="{first}"] .viewers .initials')).to_have_text(["AL"])
        # Ana types: Bob sees it
        await ana.locator("#reply-text").press_sequentially("Let me check")
        await expect(bob.locator("#presence .viewer.typing")).to_have_text(["ALAna Lima is typing…"])
        await bob.screenshot(path=str(ARTIFACTS / "console-presence.png"))
        # Ana moves to another case: Bob no longer sees her here, but there
        await row(ana, second).click()
        await expect(bob.locator("#presence .viewer")).to_have_count(0)
        await expect(bob.locator(f'#list li[data-id="{second}"] .viewers .initials')).to_have_text(["AL"])
        # Ana closes the console: gone from the list as well
        await ana.context.close()
        await expect(bob.locator("#list .viewers .initials")).to_have_count(0)
        no_trouble(watches[1:])


async def test_a_search_while_the_record_is_away_shows_the_live_cases_and_says_so(
        browser: Browser, redis_url: str, tabs: list[Tab]) -> None:
    config = queue_config()
    config["history"] = {"enabled": True, "url": f"postgresql+asyncpg://bridge@127.0.0.1:{free_port()}/history"}
    async with running_bridge(redis_url, config, env=ENV) as b:
        tab = await open_tab(tabs, b)  # the chat opens while the record is away
        visitor = (await tab.welcome())["visitor"]
        await tab.say("m0", "Do you ship to Malaysia?")
        routine = (await b.wait_for(lambda: b.redis.get(keys.current_conversation("widget", visitor, 8)),
                                    what="the case")).decode()
        watches: list[Watch] = []
        page = await console_as(browser, b, watches, name="Bob")
        rows = page.locator("#list li[data-id]")
        await expect(rows).to_have_count(1)
        await expect(page.locator("#list li.note")).to_have_count(0)
        await page.locator("#search").fill("malaysia")
        await page.locator("#search").press("Enter")
        await expect(page.locator("#list li.note")).to_have_text(
            "Older conversations could not be searched just now (the history database did not answer): "
            "these are the ones kept live.")
        await expect(rows).to_have_count(1)
        await expect(row(page, routine).locator(".preview")).to_have_text("Do you ship to Malaysia?")
        await page.screenshot(path=str(ARTIFACTS / "console-search-record-away.png"))
        await page.locator("#search").press("Escape")
        await expect(page.locator("#list li.note")).to_have_count(0)

        # a case only the record holds (as the contact panel opens one): it cannot be
        # opened now, and the agent reads why; a live case opens as ever
        await page.evaluate("document.dispatchEvent(new CustomEvent('console:open', {detail: '0123456789ab-1'}))")
        await expect(page.locator("#open-error")).to_contain_text(
            "This conversation cannot be opened just now: the history database did not answer")
        await row(page, routine).click()
        await expect(page.locator("#conversation")).to_have_attribute("data-id", routine)
        await expect(page.locator("#open-error")).to_be_hidden()
        no_trouble(watches)


async def test_a_click_on_a_row_is_not_lost_when_the_list_is_redrawn_under_it(
        browser: Browser, redis_url: str, tabs: list[Tab]) -> None:
    """An agent presses on a case while another customer writes: the list is redrawn between
    the press and the release (the other row's last words change, the order does not), and
    the case still opens. Before, every redraw took each row out of the page and put it back,
    and a row taken out between the press and the release got no click."""
    async with running_bridge(redis_url, queue_config(), env=ENV) as b:
        watches: list[Watch] = []
        first = await case(b, tabs, "Where is my order?")
        second = await case(b, tabs, "Do you ship to Norway?")
        page = await console_as(browser, b, watches, name="bob")
        await expect(page.locator("#list li[data-id]")).to_have_count(2)
        await expect(page.locator("#list li[data-id]").first).to_have_attribute("data-id", first)  # longest waiting
        box = await row(page, first).bounding_box()
        assert box is not None
        await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        await page.mouse.down()
        await tabs[1].say("again", "Still there?")
        await expect(row(page, second).locator(".preview")).to_have_text("Still there?")  # redrawn
        assert await row(page, first).bounding_box() == box  # still under the pointer
        await page.mouse.up()
        await expect(page.locator("#conversation")).to_have_attribute("data-id", first)
        no_trouble(watches)
