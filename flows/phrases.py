"""Phrase lists per language and a matcher that tolerates case, punctuation and typos.

A phrase matches at word boundaries, Latin-script words with their usual endings
("shortage" matches "shortages", not "urgent" "urgency"), Russian ones with up to four
more letters ("остановил" matches "остановилась", "счёт" not "счётчик"), with at most
one extra word between its words ("line down" matches "line is down"); phrases of three
letters or fewer must match a whole word. Latin and Cyrillic phrases of eight letters or
more (never short common words) also match a run of as many words whose similarity
(rapidfuzz ``ratio``) reaches the cut-off, so "prodution line stoped" still finds
"production line stopped". Chinese phrases match as substrings: Chinese has no spaces,
and its typos are wrong characters, not letters.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml
from rapidfuzz import fuzz, process

from flows.common import DATA_DIR

LANGUAGES = ("en", "zh", "ru", "tl", "ms")

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_NON_WORD = re.compile(r"[^\w\u3400-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[^\W\d_]+|\d+", re.UNICODE)
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
# Endings a Latin-script phrase may take: inflections ("shortages", "overheating",
# "urgently"), Malay/Tagalog suffixes and the clitic "-nya", but not another word
# ("urgent" must not match "urgency").
_LATIN_ENDINGS = r"(?:s|es|ed|d|ing|ly|er|ers|an|in|kan|nya)?(?!\w)"


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


def normalize(text: str) -> str:
    """Case-folded, accents and punctuation dropped, "ё" read as "е", spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold().replace("ё", "е")
    decomposed = unicodedata.normalize("NFD", text)
    # drop combining marks except the Cyrillic short i's breve, which is a letter of its own
    kept: list[str] = []
    for ch in decomposed:
        if unicodedata.combining(ch) and not (kept and kept[-1] == "и" and ch == "\u0306"):
            continue
        kept.append(ch)
    text = unicodedata.normalize("NFC", "".join(kept))
    text = text.replace("-", " ").replace("'", "").replace("’", "")
    return _NON_WORD.sub(" ", text).strip()


@dataclass(frozen=True)
class Hit:
    """One phrase found in a text: which list, which phrase, where (normalized offsets)."""

    group: str
    phrase: str
    language: str
    start: int
    end: int
    fuzzy: bool = False

    def overlaps(self, other: Hit) -> bool:
        return self.start < other.end and other.start < self.end


@dataclass(frozen=True)
class _Phrase:
    group: str
    text: str
    language: str
    pattern: re.Pattern[str] | None  # None: CJK substring
    words: int
    fuzzy: bool


class PhraseMatcher:
    """Finds phrases of named groups (e.g. urgency categories) in a text."""

    def __init__(self, phrases: list[tuple[str, str, str]], *, fuzzy_cutoff: float = 88.0,
                 fuzzy_min_len: int = 8) -> None:
        """``phrases``: (group, phrase, language) triples."""
        self.fuzzy_cutoff = fuzzy_cutoff
        self._phrases: list[_Phrase] = []
        seen: set[tuple[str, str]] = set()
        for group, raw, language in phrases:
            text = normalize(raw)
            if not text or (group, text) in seen:
                continue
            seen.add((group, text))
            if has_cjk(text):
                self._phrases.append(_Phrase(group, text, language, None, 0, False))
                continue
            if len(text) <= 3 or text.isdigit():
                tail = r"(?!\w)"
            elif _CYRILLIC.search(text):
                # Russian words change their endings freely, but a stem is not another word:
                # "счёт" matches "счёта", "счёту", not "счётчиков"
                tail = r"[а-яё]{0,4}(?!\w)"
            else:
                tail = _LATIN_ENDINGS
            # one extra word may stand between the words of a phrase ("line [is] down")
            body = r"\s+(?:\w+\s+)?".join(re.escape(w) for w in text.split())
            pattern = re.compile(r"(?<!\w)" + body + tail)
            words = len(text.split())
            self._phrases.append(_Phrase(group, text, language, pattern, words,
                                         len(text.replace(" ", "")) >= fuzzy_min_len))

    def find(self, text: str, *, normalized: bool = False) -> list[Hit]:
        """Every phrase found in ``text``, at most one hit per phrase."""
        norm = text if normalized else normalize(text)
        hits: list[Hit] = []
        if not norm:
            return hits
        spans = [(m.group(), m.start(), m.end()) for m in _WORD.finditer(norm)]
        windows: dict[int, tuple[list[str], list[tuple[int, int]]]] = {}
        cut: dict[tuple[int, int], list[str]] = {}
        for phrase in self._phrases:
            if phrase.pattern is None:
                pos = norm.find(phrase.text)
                if pos >= 0:
                    hits.append(Hit(phrase.group, phrase.text, phrase.language, pos, pos + len(phrase.text)))
                continue
            found = phrase.pattern.search(norm)
            if found:
                hits.append(Hit(phrase.group, phrase.text, phrase.language, found.start(), found.end()))
                continue
            if not phrase.fuzzy or len(spans) < phrase.words:
                continue
            if phrase.words not in windows:
                n = phrase.words
                windows[n] = ([" ".join(w for w, _, _ in spans[i:i + n]) for i in range(len(spans) - n + 1)],
                              [(spans[i][1], spans[i + n - 1][2]) for i in range(len(spans) - n + 1)])
            choices, offsets = windows[phrase.words]
            # the similarity of the phrase and a run of words, forgiving longer word endings
            # ("counterfiet" ~ "counterfeit", "shortages" ~ "shortage"): the better of the
            # whole run and the run cut one letter past the phrase's length, both scored by
            # rapidfuzz's own loop (a Python scorer per window would cost milliseconds)
            cut_key = (phrase.words, len(phrase.text) + 1)
            if cut_key not in cut:
                cut[cut_key] = [c[: cut_key[1]] for c in choices]
            best = None
            for candidates in (choices, cut[cut_key]):
                found_fuzzy = process.extractOne(phrase.text, candidates, scorer=fuzz.ratio,
                                                 score_cutoff=self.fuzzy_cutoff)
                if found_fuzzy is not None and (best is None or found_fuzzy[1] > best[1]):
                    best = found_fuzzy
            if best is not None:
                start, end = offsets[best[2]]
                hits.append(Hit(phrase.group, phrase.text, phrase.language, start, end, fuzzy=True))
        return hits


@cache
def builtin(language: str) -> dict[str, Any]:
    """flows/data/phrases/<language>.yaml: urgent categories, not_urgent, topics, handoff."""
    path = DATA_DIR / "phrases" / f"{language}.yaml"
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return data if isinstance(data, dict) else {}
