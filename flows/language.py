"""Step ``language``: which language the customer writes in, remembered per contact.

Detection is offline (lingua, models shipped in the wheel), restricted to the configured
languages: fewer candidates make short messages far more reliable and the detector
small (~0.25 s to build, preloaded once per process and shared). A short or ambiguous
message ("ok", "12345", "hi") does not change anything: the contact's remembered
language, then the platform's hint (Telegram ``language_code``), then the default apply.
Customers often mix English into their own language ("down ang line namin po"); when the
detector is unsure (below ``marker_below``), words only one configured language uses
(``markers`` in flows/data/phrases) decide. A short message (fewer than ``short_letters``
letters) keeps the language already known (the contact's, the platform's hint) unless
detection is confident (``short_confident``). Capitalized words inside a sentence (place
and company names: "do you ship to Manila?") are left out of detection, and only the
start and end of a long message are read.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridge.errors import ConfigError
from bridge.turn import FlowConfig, Step, Turn
from flows.common import is_customer_text, step_settings
from flows.model import capped
from flows.phrases import builtin, has_cjk, normalize


class LanguageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    languages: list[str] | None = None  # default: triage.languages
    min_confidence: float = Field(0.5, ge=0, le=1)  # below this a message keeps the known language
    min_letters: int = Field(5, ge=0)  # shorter messages keep the known language
    use_sender_hint: bool = True  # the platform's language hint when nothing else is known
    marker_below: float = Field(0.8, ge=0, le=1)  # below this confidence, marker words may decide
    short_letters: int = Field(30, ge=0)  # shorter messages keep the known language unless confident
    short_confident: float = Field(0.9, ge=0, le=1)  # ... at this confidence

    @field_validator("languages")
    @classmethod
    def _iso(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("at least one language is needed")
        return value


_detectors: dict[tuple[str, ...], Any] = {}
_lock = threading.Lock()


def detector(languages: tuple[str, ...]) -> Any:
    """The lingua detector for these ISO 639-1 codes, built once per process."""
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    with _lock:
        found = _detectors.get(languages)
        if found is None:
            langs = []
            for code in languages:
                iso = getattr(IsoCode639_1, code.upper(), None)
                if iso is None:
                    raise ValueError(code)
                langs.append(Language.from_iso_code_639_1(iso))
            builder = LanguageDetectorBuilder.from_languages(*langs) if len(langs) > 1 else None
            found = builder.with_preloaded_language_models().build() if builder else _Single(languages[0])
            _detectors[languages] = found
        return found


class _Single:
    """One configured language: nothing to detect."""

    def __init__(self, code: str) -> None:
        self.code = code


class LanguageDetector:
    """Detects one of the configured languages, or None when the text does not say."""

    def __init__(self, languages: list[str], *, min_confidence: float = 0.5, min_letters: int = 5,
                 marker_below: float = 0.8) -> None:
        self.languages = tuple(languages)
        self.min_confidence = min_confidence
        self.min_letters = min_letters
        self._detector = detector(self.languages)
        self.marker_below = marker_below
        self._markers = {lang: set(builtin(lang).get("markers") or []) for lang in self.languages}
        self._markers = {lang: words for lang, words in self._markers.items() if words}

    def detect(self, text: str) -> tuple[str | None, float]:
        """(language code or None, confidence 0..1)."""
        if isinstance(self._detector, _Single):
            return self._detector.code, 1.0
        text = without_names(capped(text))
        letters = sum(1 for ch in normalize(text) if ch.isalpha())
        if has_cjk(text) and "zh" in self.languages:
            cjk = sum(1 for ch in text if has_cjk(ch))
            if cjk * 3 >= letters or cjk >= 4:  # Han characters carry a word each
                return "zh", 1.0
        if letters < self.min_letters:
            return None, 0.0
        values = self._detector.compute_language_confidence_values(text)
        if not values:
            return None, 0.0
        best = values[0]
        code = best.language.iso_code_639_1.name.lower()
        if best.value < self.marker_below:
            marked = self._marked(text)
            if marked:
                return marked, float(best.value)
        if best.value < self.min_confidence:
            return None, float(best.value)
        return code, float(best.value)

    def _marked(self, text: str) -> str | None:
        """The one language whose marker words (flows/data/phrases: ``markers``) stand out."""
        words = normalize(text).split()
        counts = {lang: sum(w in markers for w in words) for lang, markers in self._markers.items()}
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])
        if ranked and ranked[0][1] > 0 and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]):
            return ranked[0][0]
        return None


_NAME = re.compile(r"(?<=[a-z0-9,;:] )[A-Z][a-z]+(?: [A-Z][a-z]+)*")


def without_names(text: str) -> str:
    """The text without capitalized words inside a sentence (names of places, companies,
    people: "ship to Manila", "ke Kota Kinabalu"), when enough else is left to read."""
    stripped = _NAME.sub(" ", text)
    return stripped if sum(ch.isalpha() for ch in stripped) >= 8 else text


def build(config: FlowConfig) -> Step:
    settings = step_settings(config, "language", LanguageSettings)
    languages = settings.languages or config.settings.triage.languages
    try:
        found = LanguageDetector(languages, min_confidence=settings.min_confidence, min_letters=settings.min_letters,
                                 marker_below=settings.marker_below)
    except ValueError as exc:
        key = "flows.language.languages" if settings.languages else "triage.languages"
        raise ConfigError([f"{key}: {exc.args[0]!r} is not an ISO 639-1 language code lingua knows"]) from None
    default = config.settings.triage.default_language
    known = set(languages)

    def language(turn: Turn) -> None:
        if not is_customer_text(turn) or turn.notes.get("language"):
            return  # (already done when both "triage" and "language" are configured)
        text = turn.message.text.strip()
        code, confidence = (None, 0.0) if text.startswith("/") else found.detect(text)  # commands: no language
        turn.notes["language"] = {"detected": code, "confidence": round(confidence, 3)}
        contact = turn.contact
        hint = (turn.message.sender.language if turn.message.sender else "")[:2].lower()
        known_here = turn.conversation.language or (contact.language if contact else "")
        if not known_here and settings.use_sender_hint and hint in known:
            known_here = hint
        letters = sum(ch.isalpha() for ch in text[:500])
        if code is not None and known_here and code != known_here and not has_cjk(text) \
                and letters < settings.short_letters and confidence < settings.short_confident:
            code = None  # a few words: the language we know is the better guess
        if code is None:
            code = known_here or default
        turn.conversation.language = code
        if contact is not None and contact.language != code:
            contact.language = code
            turn.contact_changed = True

    return language
