"""Triage a support lead can trust: rules that read like a person, the learned model and
its labels, the "check urgency" band, one clock for promise and SLA, safe defaults."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bridge.flowstate import SlaState, read_state
from bridge.model import Contact, Message, Sender
from bridge.store import Store
from flows import labels, order_status, routing, sla, triage
from flows import model as learned
from flows.phrases import PhraseMatcher
from flows.urgency import Rules, UrgencySettings, decide
from tests.harness import commit
from tests.test_cli import bridge_cli as _bridge_cli
from tests.test_cli import write
from tests.test_flows_helpers import Chat, Clock, events, make_config, replies
from tests.test_flows_order_status import Shop, shop  # noqa: F401  (the fake shop fixture)

UTC = dt.UTC
ROOT = Path(__file__).resolve().parent.parent


def bridge_cli(*args: str, cwd: Path, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """The command from this checkout (not whichever copy is installed)."""
    return _bridge_cli(*args, cwd=cwd, env={"PYTHONPATH": str(ROOT), **(env or {})})


def at(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


def triaged(config=None, **kwargs) -> Chat:  # type: ignore[no-untyped-def]
    config = config or make_config()
    return Chat(config, [triage.build(config), routing.build(config)], **kwargs)


CALM_AND_RESOLVED = [
    # hedges and negations, each in its own language
    ("No rush, but could you quote 300 pcs of the line driver IC for next quarter?", "en", "calmed"),
    ("不用急，下周给我们报个价就行", "zh", "calmed"),
    ("Не к спеху: пришлите, пожалуйста, счёт за прошлый месяц.", "ru", "calmed"),
    ("Walang pagmamadali po, pakisend lang ng quotation para sa susunod na buwan.", "tl", "calmed"),
    ("Tidak mendesak, cuma nak tanya harga untuk suku depan.", "ms", "calmed"),
    ("This is not urgent: the emergency stop button label is misprinted on 3 units.", "en", "calmed"),
    # status updates: a problem told as over is not a new urgency
    ("Good news, our line is back up since this morning. Thanks for the quick parts!", "en", "resolved"),
    ("产线已恢复，谢谢你们的支持", "zh", "resolved"),
    ("Линия заработала, спасибо за помощь!", "ru", "resolved"),
    ("Gumagana na ulit ang linya namin, salamat po!", "tl", "resolved"),
    ("Line kami dah berjalan semula, terima kasih!", "ms", "resolved"),
]


@pytest.mark.parametrize(("text", "lang", "why"), CALM_AND_RESOLVED)
async def test_hedges_negations_and_resolved_status_are_not_urgent(text: str, lang: str, why: str) -> None:
    turn = await triaged().say(text)
    conv = turn.conversation
    assert conv.language == lang
    assert conv.urgency == "routine", conv.urgency_reason
    assert why in conv.urgency_reason  # the decision keeps its reason
    assert not events(turn, "escalation")


UNLISTED_URGENT = [
    ("Line stopped since morning, nothing else to run.", "en"),
    ("Station idle and work piling up since the night shift, the reels never came", "en"),
    ("Units don't boot, final assembly paused until someone tells us why", "en"),
    ("Equipment damaged by a bad part from your last lot, the tester is dead", "en"),
    ("从早上到现在线一直停着，等你们的料", "zh"),
    ("Участок стоит с утра, работа копится", "ru"),
]


@pytest.mark.parametrize(("text", "lang"), UNLISTED_URGENT)
async def test_urgent_situations_told_without_a_listed_phrase_are_escalated(text: str, lang: str) -> None:
    turn = await triaged().say(text)
    conv = turn.conversation
    assert conv.urgency == "urgent", conv.urgency_reason
    assert "model" in conv.urgency_reason and "urgent" in conv.urgency_reason
    assert events(turn, "escalation")
    assert "minutes" in replies(turn)[0].text or lang != "en"


def test_phrases_are_read_only_in_the_message_language() -> None:
    rules = Rules(UrgencySettings(builtin_phrases=False, phrases={"tl": {"counterfeit": ["sample batch"]}}), {})
    text = "Could you send a sample batch of 10 pcs?"
    assert rules.read(text, ["en"]).hits == []
    assert [h.group for h in rules.read(text, ["tl"]).hits] == ["counterfeit"]


def test_no_fuzzy_match_on_short_common_words() -> None:
    matcher = PhraseMatcher([("doa_rma", "lahat sira", "tl"), ("line_down", "production line stopped", "en")])
    assert matcher.find("Salamat po, lahat okay na") == []  # a thank-you note is not "everything broken"
    (hit,) = matcher.find("prodution line stoped again")
    assert hit.fuzzy and hit.group == "line_down"


async def test_check_urgency_band_goes_to_agents_with_a_short_target() -> None:
    config = make_config({"urgency": {"model_urgent": 1.0, "model_check": 0.0, "phrase_floor": 1.0}})
    turn = await triaged(config).say("Could you send me the price list for the relays?")
    conv = turn.conversation
    assert conv.urgency == "routine"
    (check,) = events(turn, "check_urgency")
    assert check.text.startswith("Check urgency: ") and "model" in check.text
    (ack,) = replies(turn)
    assert "within 60 minutes" in ack.text  # the "check" target, not the 24-hour queue promise
    (new,) = events(turn, "new_conversation")
    assert new.data["check_urgency"] is True


async def test_a_config_without_keywords_still_gets_multilingual_triage() -> None:
    config = make_config()  # no triage.urgent_keywords, no flows.triage
    assert config.settings.triage.urgent_keywords == {}
    turn = await triaged(config).say("我们的生产线停了，急需这批料")
    assert turn.conversation.urgency == "urgent" and turn.conversation.language == "zh"
    assert turn.conversation.topic  # every message gets a topic


@pytest.mark.parametrize(("text", "topic"), [
    ("I can't log into the portal, the password reset link has expired", "accounts"),
    ("Hello there", "general"),
    ("登录不上去，验证码一直收不到", "accounts"),
])
async def test_every_message_gets_a_topic_accounts_included(text: str, topic: str) -> None:
    turn = await triaged().say(text)
    assert turn.conversation.topic == topic


async def test_language_follows_the_hint_for_short_messages_and_ignores_place_names() -> None:
    turn = await triaged().say("hello, do you ship to Manila?")
    assert turn.conversation.language == "en"
    chat = triaged()
    turn = await chat.run(Message(kind="customer", channel="api", address="a", text="ok thanks",
                                  sender=Sender(id="u", language="ms")))
    assert turn.conversation.language == "ms"
    assert (await triaged().say("Boleh hantar ke Kota Kinabalu? Biasanya berapa hari?")).conversation.language == "ms"
    assert (await triaged().say("Pwede po bang ipadala sa Kota Kinabalu? Ilang araw po?")).conversation.language == "tl"


async def test_chinese_order_question_with_the_number_inside_looks_it_up(shop: Shop) -> None:  # noqa: F811
    config = make_config({"order_status": {"url": shop.url + "/orders/{order}?lang={language}", "allow_private": True,
                                           "headers": {"Authorization": "Bearer t0ken"}}})
    chat = Chat(config, [triage.build(config), order_status.build(config)])
    turn = await chat.say("我的订单 48213 到哪了？")
    assert shop.requests == ["/orders/48213?lang=zh"]
    assert replies(turn)[0].text.startswith("订单 48213")
    turn = await Chat(config, [triage.build(config), order_status.build(config)]).say("我的订单55120到哪了")
    assert shop.requests[-1] == "/orders/55120?lang=zh"


def hours_config(clock: Clock):  # type: ignore[no-untyped-def]
    week = {d: "09:00-18:00" for d in ("mon", "tue", "wed", "thu", "fri")}
    return make_config({"hours": {"teams": {"support": {"timezone": "UTC", "week": week}}},
                       "sla": {"business_hours": ["routine"]}}, clock=clock)


async def test_the_acknowledgement_states_the_sla_clock_time() -> None:
    clock = Clock(at(2026, 11, 18, 16, 47))  # a Wednesday, 16:47
    config = hours_config(clock)
    chat = Chat(config, [triage.build(config), routing.build(config), sla.build(config)])
    turn = await chat.say("Could you send the invoice for order 4410 again?")
    (ack,) = replies(turn)
    # 24 business hours: 1 h 13 min on Wednesday, 9 h Thursday, 9 h Friday, 4 h 47 min on Monday
    assert "by Monday 2026-11-23 13:47 (UTC)" in ack.text
    assert read_state(turn.conversation, "sla", SlaState).first_response_due_ms == at(2026, 11, 23, 13, 47)


async def test_the_promise_is_in_the_customer_language_and_time_zone() -> None:
    clock = Clock(at(2026, 11, 18, 16, 47))
    config = hours_config(clock)
    contact = Contact(id="c1", data={"timezone": "Asia/Manila"})
    turn = await Chat(config, [triage.build(config), routing.build(config)], contact=contact).say(
        "请把4410号订单的发票再发一次")
    assert "星期一 2026-11-23 21:47 (Asia/Manila)" in replies(turn)[0].text


async def test_a_long_message_is_read_at_its_start_and_end() -> None:
    filler = "We would like to discuss the annual forecast and pricing. " * 2000  # ~116,000 characters
    turn = await triaged().say(filler + "PS: our SMT line is down right now, please call.")
    assert turn.conversation.urgency == "urgent"
    assert learned.capped(filler) != filler and len(learned.capped(filler)) < 2100


async def test_agent_corrections_become_labels_the_model_trains_on(redis: aioredis.Redis, tmp_path: Path) -> None:
    chat = triaged()
    await chat.say("The cartons arrived a bit wet, but we still need to talk about it soon")
    turn = await chat.command("urgency", urgency="urgent")
    turn2 = await chat.command("topic", topic="shipping")
    assert events(turn2, "state")[0].text.startswith("topic set to shipping")
    label = [n for t in (turn, turn2) for n in t.notices if n.name == labels.LABEL_EVENT][-1]
    assert label.data["urgent"] is True and label.data["topic"] == "shipping"
    assert label.data["text"].startswith("The cartons arrived")

    # kept the way the engine keeps notices: in the conversation's transcript
    store = Store(redis, partitions=8)
    conv = chat.conversation
    assert conv is not None
    ops = store.save_ops(conv, None) + store.transcript_ops(conv.id, label)
    await commit(redis, ops)
    (example,) = await labels.collect(store)
    assert (example.urgent, example.topic, example.source) == (True, "shipping", "agent")

    lines = await labels.train_command(store, tmp_path)
    assert "model version 1" in lines[1]
    lines = await labels.train_command(store, tmp_path)
    assert "model version 2" in lines[1]
    model = learned.load_latest(learned.model_dir(tmp_path))
    assert model is not None and model.version == 2
    assert model.examples == len(learned.shipped_examples()) + (0 if labels.held_out(example) else 1)


async def test_evaluation_prints_per_language_figures_with_counts() -> None:
    lines = labels.evaluation_report([], folds=2)
    text = "\n".join(lines)
    assert "cross-validated (2 folds)" in text and "held out (never trained or tuned on)" in text
    for lang in ("en", "zh", "ru", "tl", "ms"):
        assert f"  {lang}   precision" in text
    assert "(of " in text  # each figure says how many examples it rests on


def test_triage_train_command_writes_a_versioned_model(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", {"redis": {"data_dir": str(tmp_path / "data")}})
    result = bridge_cli("triage", "train", "--no-labels", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "model version 1" in result.stdout
    assert (tmp_path / "data" / "triage" / "model-v1.pkl").exists()


def test_check_config_warns_when_no_person_sees_escalations(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", {"channels": {"api": {"token": "${T}"}}})
    result = bridge_cli("check-config", "-c", str(config), cwd=tmp_path, env={"T": "abcdefghijklmnop"})
    assert result.returncode == 0, result.stderr
    assert "urgent escalations -> nobody" in result.stdout
    assert "warning: urgent escalations reach no person" in result.stdout
    assert "warning: routine queues reach no person" in result.stdout

    example = Path(__file__).parent.parent / "config.example.yaml"
    result = bridge_cli("check-config", "-c", str(example), cwd=tmp_path,
                        env={"BRIDGE_API_TOKEN": "t0ken-value", "BRIDGE_WEBHOOK_SECRET": "s3cret-value"})
    assert result.returncode == 0, result.stderr
    assert "urgent escalations -> widget" in result.stdout and "warning" not in result.stdout


def test_more_urgent_categories_need_less_agreement_from_the_model() -> None:
    settings = UrgencySettings()
    rules = Rules(settings, {})
    one = rules.read("our line is down", ["en"])
    two = rules.read("URGENT our line is down", ["en"])
    assert len({h.group for h in two.hits}) == 2
    # a model that reads the rest of the message as routine (a question about returns)
    assert decide(settings, one, 0.1).level == "check"
    assert decide(settings, two, 0.1).level == "urgent"
    assert decide(settings, two, 0.05).level == "check"
