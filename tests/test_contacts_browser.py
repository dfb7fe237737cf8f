"""The console's contact panel in a real headless Chromium, through the whole bridge: the
customer's contact, fields an agent edits, a link confirmed after looking at both
contacts, and the same person's conversations on another channel. Screenshots land in
tests/artifacts/."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from tests.harness import running_bridge
from tests.test_api_e2e import AUTH
from tests.test_contacts_api import customer_writes
from tests.test_widget_browser import (  # noqa: F401 - browser is a fixture
    ARTIFACTS,
    WAIT_MS,
    Watch,
    browser,
    console_page,
    pytestmark,
    type_message,
    visitor_page,
    visitor_texts,
)
from tests.test_widget_protocol import ENV, widget_config

API_ENV = {**ENV, "T_API_TOKEN": AUTH["Authorization"].split()[1]}


def config() -> dict[str, object]:
    base = widget_config(console={"poll_interval_s": 3600})
    base["channels"]["api"] = {"token": "${T_API_TOKEN}"}  # type: ignore[index]
    return base


async def test_the_contact_panel_edits_fields_and_links_a_person_on_another_channel(
        browser: Browser, redis_url: str) -> None:  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    async with running_bridge(redis_url, config(), env=API_ENV) as b:
        watches: list[Watch] = []
        # the same person writes from the shop's website and, earlier, through the ERP (API)
        erp = await customer_writes(b, "maria-erp", "Price list for 2027?", "m1", name="Maria K",
                                    email="maria@factory.example")
        page = await visitor_page(browser, b, watches)
        await type_message(page, "Hello, where is my order 1234?")
        await expect(visitor_texts(page, "bot")).to_have_count(1, timeout=WAIT_MS)

        console = await console_page(browser, b, watches, name="Ana")
        row = console.locator("#list li[data-id]").filter(has=console.locator(".tag", has_text="widget"))
        await expect(row).to_have_count(1, timeout=WAIT_MS)
        await row.click()
        await expect(console.locator("#conversation")).to_be_visible(timeout=WAIT_MS)
        panel = console.locator("#contact-panel")
        await expect(panel).to_be_visible(timeout=WAIT_MS)
        conversations = panel.locator("#contact-conversations li")
        await expect(conversations).to_have_count(1)
        await expect(conversations).to_contain_text(["widget"])

        # fields: edited, saved, kept, and the change recorded with who made it
        await console.locator("#contact-company").fill("Acme Fabs")
        await console.locator("#contact-tier").fill("vip")
        await console.locator("#contact-notes").fill("Prefers email. <b>not bold</b>")
        await console.locator("#contact-save").click()
        await expect(console.locator("#contact-saved")).to_have_text("Saved", timeout=WAIT_MS)
        await expect(console.locator("#contact-events li")).to_have_count(3)
        await expect(console.locator("#contact-events")).to_contain_text("Ana set tier to vip")
        await console.reload()
        await console.locator("#list li[data-id]").filter(has=console.locator(".tag", has_text="widget")).click()
        await expect(console.locator("#contact-company")).to_have_value("Acme Fabs", timeout=WAIT_MS)
        await expect(console.locator("#contact-notes")).to_have_value("Prefers email. <b>not bold</b>")

        # a link is proposed, both contacts shown side by side, and made only on confirmation
        await console.locator("#contact-link-query").fill("api:maria-erp")
        await console.locator("#contact-link-find").click()
        proposal = console.locator("#contact-proposal")
        await expect(proposal).to_be_visible(timeout=WAIT_MS)
        await expect(console.locator("#contact-proposal-other")).to_contain_text("maria@factory.example")
        await expect(console.locator("#contact-proposal-other")).to_contain_text("api:maria-erp")
        await expect(console.locator("#contact-proposal-this")).to_contain_text("Acme Fabs")
        await expect(console.locator("#contact-linked li")).to_have_count(1)  # nothing linked yet
        await console.screenshot(path=str(ARTIFACTS / "contact-link-proposal.png"))
        await console.locator("#contact-link-confirm").click()
        await expect(proposal).to_be_hidden(timeout=WAIT_MS)
        await expect(console.locator("#contact-linked li")).to_have_count(2)
        await expect(conversations).to_have_count(2)
        api_row = conversations.and_(console.locator('[data-channel="api"]'))
        await expect(api_row).to_contain_text("open")
        await expect(console.locator("#contact-events li").first).to_contain_text("Ana linked")
        await console.screenshot(path=str(ARTIFACTS / "contact-panel.png"))

        # the other channel's conversation opens from the panel
        await api_row.click()
        await expect(console.locator("#conversation")).to_have_attribute("data-id", erp, timeout=WAIT_MS)
        await expect(console.locator("#conv-title")).to_contain_text("api")
        await expect(console.locator("#contact-company")).to_have_value("Acme Fabs", timeout=WAIT_MS)

        # unlinking takes it out again, and is recorded
        await console.locator("#contact-linked li button.unlink").click()
        await expect(console.locator("#contact-linked li")).to_have_count(1, timeout=WAIT_MS)
        await expect(conversations).to_have_count(1)
        await expect(console.locator("#contact-events li").first).to_contain_text("Ana unlinked")

        for watch in watches:
            assert watch.dialogs == [] and watch.errors == [] and watch.foreign == []
