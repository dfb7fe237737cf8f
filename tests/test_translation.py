"""The translation providers over real HTTP (a local fake of LibreTranslate, DeepL and an
OpenAI-compatible endpoint), their failures, and the ``translation:`` config."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bridge.config import secrets_in
from bridge.errors import ConfigError
from bridge.translation import (
    TranslationSettings,
    TranslationUnavailable,
    Translator,
    agents_languages,
    deepl_target,
    deepl_url,
)
from tests.fakes.translation_api import FakeTranslation
from tests.harness import load_config

ZH = "生产线停了，需要紧急帮助"
EN = "The production line has stopped, urgent help needed"
DEEPL_KEY = "0a1b2c3d-test:fx"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTranslation]:
    async with FakeTranslation({(ZH, "en"): EN, ("We are on it.", "zh"): "我们正在处理。"},
                               deepl_key=DEEPL_KEY) as server:
        yield server


def settings(fake: FakeTranslation, provider: str, **extra: Any) -> TranslationSettings:
    base_url = {"libretranslate": fake.url, "deepl": fake.url, "openai": fake.url + "/v1"}[provider]
    values: dict[str, Any] = {"provider": provider, "base_url": base_url, "timeout_s": 2, **extra}
    if provider == "deepl":
        values.setdefault("api_key", SecretStr(DEEPL_KEY))
    if provider == "openai":
        values.setdefault("model", "qwen2.5:7b-instruct")
    return TranslationSettings(**values)


@pytest.mark.parametrize("provider", ["libretranslate", "deepl", "openai"])
async def test_each_provider_translates_both_ways(fake: FakeTranslation, provider: str) -> None:
    translator = Translator(settings(fake, provider))
    into_english = await translator.translate(ZH, "en")
    assert into_english.text == EN
    into_chinese = await translator.translate("We are on it.", "zh", "en")
    assert into_chinese.text == "我们正在处理。"
    if provider != "openai":  # the chat endpoint does not say what it read
        assert into_english.source == "zh"


async def test_each_api_is_called_as_documented(fake: FakeTranslation) -> None:
    await Translator(settings(fake, "libretranslate", api_key=SecretStr("libre-key"))).translate(ZH, "en")
    await Translator(settings(fake, "deepl")).translate("We are on it.", "zh", "en")
    await Translator(settings(fake, "openai", api_key=SecretStr("sk-local"))).translate(ZH, "en")
    (libre_path, _, libre), (deepl_path, deepl_headers, deepl), (chat_path, chat_headers, chat) = fake.requests
    assert libre_path == "/translate"
    assert libre == {"q": ZH, "source": "auto", "target": "en", "format": "text", "api_key": "libre-key"}
    assert deepl_path == "/v2/translate"
    assert deepl_headers["Authorization"] == f"DeepL-Auth-Key {DEEPL_KEY}"
    assert deepl == {"text": ["We are on it."], "target_lang": "ZH-HANS", "source_lang": "EN"}
    assert chat_path == "/v1/chat/completions"
    assert chat_headers["Authorization"] == "Bearer sk-local"
    assert chat["model"] == "qwen2.5:7b-instruct" and "into English" in chat["messages"][0]["content"]
    assert chat["messages"][1] == {"role": "user", "content": ZH}


@pytest.mark.parametrize("provider", ["libretranslate", "deepl", "openai"])
@pytest.mark.parametrize(("mode", "reason"), [
    ("500", "HTTP 500 from the provider"),
    ("429", "rate limited by the provider (HTTP 429)"),
    ("badjson", "not JSON"),
    ("hang", "no answer within 0.5 s"),
])
async def test_failures_become_a_reason_for_the_agents(fake: FakeTranslation, provider: str, mode: str,
                                                       reason: str) -> None:
    translator = Translator(settings(fake, provider, timeout_s=0.5))
    fake.fail(mode)
    with pytest.raises(TranslationUnavailable) as caught:
        await translator.translate(ZH, "en")
    assert reason in caught.value.reason
    assert DEEPL_KEY not in caught.value.reason
    fake.release()
    assert (await translator.translate(ZH, "en")).text == EN  # the next call is served again


async def test_a_wrong_deepl_key_and_an_unreachable_server_are_named(fake: FakeTranslation) -> None:
    with pytest.raises(TranslationUnavailable, match="HTTP 403"):
        await Translator(settings(fake, "deepl", api_key=SecretStr("wrong:fx"))).translate(ZH, "en")
    gone = TranslationSettings(provider="libretranslate", base_url="http://127.0.0.1:9", timeout_s=2)
    with pytest.raises(TranslationUnavailable, match="unreachable"):
        await Translator(gone).translate(ZH, "en")


async def test_the_per_minute_budget_is_kept(fake: FakeTranslation) -> None:
    now = [0.0]
    translator = Translator(settings(fake, "libretranslate", per_minute=2), clock_s=lambda: now[0])
    await translator.translate(ZH, "en")
    await translator.translate(ZH, "en")
    with pytest.raises(TranslationUnavailable, match="budget of 2 per minute"):
        await translator.translate(ZH, "en")
    assert len(fake.requests) == 2
    now[0] = 61.0
    assert (await translator.translate(ZH, "en")).text == EN


def test_no_section_means_no_translation(tmp_path: Path) -> None:
    loaded, _ = load_config(tmp_path, {})
    assert not loaded.translation.enabled
    assert agents_languages(loaded.translation, "en") == ["en"]


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    cases = [
        ({"provider": "deepl"}, "translation.api_key: required for provider deepl"),
        ({"provider": "libretranslate"}, "translation.base_url: required for provider libretranslate"),
        ({"provider": "openai", "base_url": "http://127.0.0.1:1/v1"}, "translation.model: required"),
        ({"provider": "deepl", "api_key": "literal-key:fx"},
         "translation.api_key: secrets must come from the environment"),
        ({"provider": "google"}, "translation.provider"),
        ({"provider": "libretranslate", "base_url": "ftp://x"},
         "translation.base_url: 'ftp://x' is not an http(s) URL"),
        ({"providr": "deepl"}, "translation.providr: unknown key"),
        ({"timeout_s": 0}, "translation.timeout_s"),
    ]
    for section, expected in cases:
        with pytest.raises(ConfigError) as caught:
            load_config(tmp_path, {"translation": section})
        assert any(p.startswith(expected) for p in caught.value.problems), (section, caught.value.problems)


def test_the_key_comes_from_the_environment_and_is_masked(tmp_path: Path) -> None:
    loaded, _ = load_config(tmp_path, {"translation": {"provider": "deepl", "api_key": "${T_DEEPL_KEY}",
                                                       "agent_languages": {"ana": "es"}}},
                            env={"T_DEEPL_KEY": DEEPL_KEY})
    assert loaded.translation.api_key is not None
    assert DEEPL_KEY not in repr(loaded.translation)
    assert DEEPL_KEY in secrets_in(loaded)  # masked in every log line
    assert agents_languages(loaded.translation, "en") == ["en", "es"]


def test_slack_tr_command_is_a_reply_to_translate() -> None:
    from adapters.slack.commands import parse

    parsed = parse("!tr  It ships *tomorrow* &amp; on time")
    assert (parsed.kind, parsed.text) == ("reply", "It ships *tomorrow* &amp; on time")
    assert parsed.data == {"translate": True}
    assert parse("!translate ok", mode="explicit").data == {"translate": True}  # a reply in explicit mode too
    empty = parse("!tr")
    assert empty.kind == "invalid" and "!tr needs the reply" in empty.error
    assert parse("note: !tr draft").kind == "note"


def test_deepl_urls_and_language_codes() -> None:
    assert deepl_url("", "abc:fx") == "https://api-free.deepl.com"
    assert deepl_url("", "abc") == "https://api.deepl.com"
    assert deepl_url("http://127.0.0.1:1", "abc:fx") == "http://127.0.0.1:1"
    assert [deepl_target(c) for c in ("en", "zh", "ru", "pt", "pt-PT", "en_GB", "ms")] == [
        "EN-US", "ZH-HANS", "RU", "PT-BR", "PT-PT", "EN-GB", "MS"]
