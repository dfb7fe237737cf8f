"""Machine translation for agents: pluggable providers behind one `Translator`.

Providers (``translation.provider``):

- ``libretranslate``: a self-hosted LibreTranslate server, ``POST <base_url>/translate``;
- ``deepl``: DeepL's API, ``POST <base_url>/v2/translate`` with ``Authorization:
  DeepL-Auth-Key <key>`` (the base URL defaults to the free API for a key ending in
  ``:fx``, else the pro API);
- ``openai``: any OpenAI-compatible chat-completions endpoint
  (``POST <base_url>/chat/completions``: a local Ollama, vLLM or llama.cpp server, or a
  hosted one), with ``model``.

No provider means no translation and no errors. Every failure (timeout, an HTTP error, a
429, a reply that is not what the API documents, the per-minute budget spent) raises
`TranslationUnavailable` with a short reason that never holds the key; callers fall back
to the original text and show the reason to the agents.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bridge.ratelimit import Budget

DEEPL_FREE_URL = "https://api-free.deepl.com"
DEEPL_PRO_URL = "https://api.deepl.com"
MAX_TEXT_CHARS = 20_000  # an agent's reply is at most 20,000 characters; customer text is cut there

LANGUAGE_NAMES = {"en": "English", "zh": "Chinese (Simplified)", "ru": "Russian", "tl": "Tagalog",
                  "ms": "Malay", "id": "Indonesian", "es": "Spanish", "de": "German", "fr": "French",
                  "ja": "Japanese", "ko": "Korean", "vi": "Vietnamese", "th": "Thai", "pt": "Portuguese"}


class TranslationSettings(BaseModel):
    """The ``translation:`` section."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["", "none", "libretranslate", "deepl", "openai"] = ""
    base_url: str = ""  # libretranslate and openai: required; deepl: from the key's kind when unset
    api_key: SecretStr | None = None  # ${ENV} only
    model: str = ""  # openai: the model name
    timeout_s: float = Field(5.0, gt=0)
    per_minute: int = Field(60, ge=1)  # calls at most; beyond, the original text is shown, marked
    agents_language: str = ""  # empty: triage.default_language
    agent_languages: dict[str, str] = {}  # agent (console login, Slack name or user id) -> language

    @property
    def enabled(self) -> bool:
        return self.provider not in ("", "none")


def problems(settings: TranslationSettings) -> list[str]:
    """What is missing for the chosen provider, each naming its key."""
    found = []
    provider = settings.provider
    if provider in ("libretranslate", "openai") and not settings.base_url:
        example = "http://127.0.0.1:5000" if provider == "libretranslate" else "http://127.0.0.1:11434/v1"
        found.append(f"translation.base_url: required for provider {provider} (e.g. {example})")
    if provider == "deepl" and settings.api_key is None:
        found.append("translation.api_key: required for provider deepl; write ${DEEPL_API_KEY} and export it")
    if provider == "openai" and not settings.model:
        found.append("translation.model: required for provider openai (e.g. qwen2.5:7b-instruct)")
    if settings.base_url and not settings.base_url.startswith(("http://", "https://")):
        found.append(f"translation.base_url: {settings.base_url!r} is not an http(s) URL")
    return found


def base(language: str) -> str:
    """'zh' of 'ZH-HANS', 'en' of 'en_US': languages compared by their base code."""
    return language.replace("_", "-").split("-", 1)[0].lower()


def same_language(a: str, b: str) -> bool:
    return bool(a) and bool(b) and base(a) == base(b)


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(base(code), code)


class TranslationUnavailable(Exception):
    """No translation this time; ``reason`` is shown to the agents."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Translated:
    text: str
    source: str = ""  # the language the provider read (given or detected); "" when it does not say


class Translator:
    """One provider, its budget and its error mapping."""

    def __init__(self, settings: TranslationSettings, clock_s: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.budget = Budget(settings.per_minute, clock_s)
        self._key = settings.api_key.get_secret_value() if settings.api_key else ""

    async def translate(self, text: str, target: str, source: str = "") -> Translated:
        """``text`` in ``target``; raises `TranslationUnavailable`."""
        if not self.budget.take():
            raise TranslationUnavailable(f"budget of {self.settings.per_minute} per minute spent")
        text = text[:MAX_TEXT_CHARS]
        provider = self.settings.provider
        if provider == "libretranslate":
            return await self._libretranslate(text, target, source)
        if provider == "deepl":
            return await self._deepl(text, target, source)
        if provider == "openai":
            return await self._openai(text, target, source)
        raise TranslationUnavailable("no translation provider configured")

    async def _post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
        """The JSON answer of a 200, else `TranslationUnavailable` (the one place HTTP
        outcomes become reasons)."""
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, \
                    session.post(url, json=body, headers=headers) as response:
                if response.status == 429:
                    raise TranslationUnavailable("rate limited by the provider (HTTP 429)")
                if response.status != 200:
                    raise TranslationUnavailable(f"HTTP {response.status} from the provider")
                return await response.json(content_type=None)
        except TimeoutError:
            raise TranslationUnavailable(f"no answer within {self.settings.timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise TranslationUnavailable(f"provider unreachable ({type(exc).__name__})") from None
        except ValueError:
            raise TranslationUnavailable("the provider's answer is not JSON") from None

    async def _libretranslate(self, text: str, target: str, source: str) -> Translated:
        body: dict[str, Any] = {"q": text, "source": base(source) if source else "auto",
                                "target": base(target), "format": "text"}
        if self._key:
            body["api_key"] = self._key
        answer = await self._post(self.settings.base_url.rstrip("/") + "/translate", body, {})
        translated = answer.get("translatedText") if isinstance(answer, dict) else None
        if not isinstance(translated, str):
            raise TranslationUnavailable("the provider's answer has no translatedText")
        detected = answer.get("detectedLanguage")
        found = detected.get("language") if isinstance(detected, dict) else None
        return Translated(translated, base(found) if isinstance(found, str) else base(source))

    async def _deepl(self, text: str, target: str, source: str) -> Translated:
        url = deepl_url(self.settings.base_url, self._key)
        body: dict[str, Any] = {"text": [text], "target_lang": deepl_target(target)}
        if source:
            body["source_lang"] = base(source).upper()
        answer = await self._post(url.rstrip("/") + "/v2/translate", body,
                                  {"Authorization": f"DeepL-Auth-Key {self._key}"})
        try:
            first = answer["translations"][0]
            translated, detected = first["text"], first.get("detected_source_language", "")
        except (KeyError, IndexError, TypeError):
            raise TranslationUnavailable("the provider's answer has no translations") from None
        if not isinstance(translated, str):
            raise TranslationUnavailable("the provider's answer has no translations")
        return Translated(translated, base(str(detected or source)))

    async def _openai(self, text: str, target: str, source: str) -> Translated:
        url = self.settings.base_url.rstrip("/")
        if not url.endswith("/chat/completions"):
            url += "/chat/completions"
        prompt = (f"Translate the user's message into {language_name(target)}. Keep names, numbers, part "
                  "numbers and order numbers as they are. Answer with the translation only, nothing else.")
        body = {"model": self.settings.model, "temperature": 0,
                "messages": [{"role": "system", "content": prompt}, {"role": "user", "content": text}]}
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        answer = await self._post(url, body, headers)
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise TranslationUnavailable("the provider's answer has no choices[0].message.content") from None
        if not isinstance(content, str) or not content.strip():
            raise TranslationUnavailable("the provider answered with no text")
        return Translated(content.strip(), base(source))


def deepl_url(base_url: str, key: str) -> str:
    """The configured URL, else DeepL's free API for a free key (``...:fx``), else the pro API."""
    return base_url or (DEEPL_FREE_URL if key.endswith(":fx") else DEEPL_PRO_URL)


def deepl_target(language: str) -> str:
    """DeepL's target codes: English and Portuguese need a variant (a given one is kept);
    Chinese is ZH-HANS."""
    code = base(language)
    if code in ("en", "pt") and "-" in language.replace("_", "-"):
        return language.replace("_", "-").upper()
    return {"en": "EN-US", "pt": "PT-BR", "zh": "ZH-HANS"}.get(code, code.upper())


def agent_language(settings: TranslationSettings, default_language: str, *who: str) -> str:
    """The language an agent reads: ``agent_languages`` by any of ``who`` (login name,
    Slack user id or display name), else ``agents_language``, else ``default_language``."""
    for name in who:
        if name and name in settings.agent_languages:
            return settings.agent_languages[name]
    return settings.agents_language or default_language


def agents_languages(settings: TranslationSettings, default_language: str) -> list[str]:
    """Every language some agent reads (a customer message is translated into each)."""
    found = [settings.agents_language or default_language, *settings.agent_languages.values()]
    return list(dict.fromkeys(base(language) for language in found if language))
