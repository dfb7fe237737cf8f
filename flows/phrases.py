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

import numpy
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
        # A pattern starts at a word's start with the phrase's first word, so only phrases
        # whose first word begins some word of the text are searched; substrings (Chinese)
        # are searched always.
        self._by_first: dict[str, list[int]] = {}
        self._substrings: list[int] = []
        # the fuzzy phrases by word count, and within it by the length a run is cut to for
        # them: each group is scored against a text's runs in one call (rapidfuzz ``cdist``)
        self._fuzzy: dict[int, _Fuzzy] = {}
        self._fuzzy_phrase: dict[int, list[int]] = {}  # word count -> index in _phrases, per row
        for i, phrase in enumerate(self._phrases):
            if phrase.pattern is None:
                self._substrings.append(i)
                continue
            self._by_first.setdefault(phrase.text.split(" ", 1)[0], []).append(i)
            if phrase.fuzzy:
                self._fuzzy.setdefault(phrase.words, _Fuzzy(phrase.words)).add(phrase.text)
                self._fuzzy_phrase.setdefault(phrase.words, []).append(i)
        self._longest_first = max(map(len, self._by_first), default=0)

    def find(self, text: str, *, normalized: bool = False) -> list[Hit]:
        """Every phrase found in ``text``, at most one hit per phrase, in the phrases' order.

        A message is read against hundreds of phrases: only those whose first word begins
        a word of the text are searched, and the fuzzy ones are scored against the text's
        runs of words a group at a time."""
        norm = text if normalized else normalize(text)
        if not norm:
            return []
        found: dict[int, Hit] = {}  # index in _phrases -> its hit
        for i in self._substrings:
            phrase = self._phrases[i]
            pos = norm.find(phrase.text)
            if pos >= 0:
                found[i] = Hit(phrase.group, phrase.text, phrase.language, pos, pos + len(phrase.text))
        longest = self._longest_first
        starts = {word[:n] for word in norm.split() for n in range(1, min(len(word), longest) + 1)}
        for first in starts & self._by_first.keys():
            for i in self._by_first[first]:
                phrase = self._phrases[i]
                match = phrase.pattern.search(norm) if phrase.pattern is not None else None
                if match:
                    found[i] = Hit(phrase.group, phrase.text, phrase.language, match.start(), match.end())
        spans = [(m.group(), m.start(), m.end()) for m in _WORD.finditer(norm)]
        for words, fuzzy in self._fuzzy.items():
            if len(spans) < words:
                continue
            indexes = self._fuzzy_phrase[words]
            for row, where in fuzzy.found(spans, self.fuzzy_cutoff).items():
                i = indexes[row]
                if i not in found:
                    phrase = self._phrases[i]
                    found[i] = Hit(phrase.group, phrase.text, phrase.language, *where, fuzzy=True)
        return [found[i] for i in sorted(found)]


class _Fuzzy:
    """The fuzzy phrases of ``n`` words, and where each is most like a run of ``n`` words
    of a text: the better of the whole run and the run cut one letter past the phrase's
    length ("counterfiet" ~ "counterfeit", "shortages" ~ "shortage"; a tie keeps the whole
    run), the first run of that score, at the cut-off or above."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.texts: list[str] = []
        self.cuts: dict[int, tuple[list[str], list[int]]] = {}  # cut length -> texts, their rows

    def add(self, text: str) -> None:
        """The next row: ``text``."""
        texts, rows = self.cuts.setdefault(len(text) + 1, ([], []))
        texts.append(text)
        rows.append(len(self.texts))
        self.texts.append(text)

    def found(self, spans: list[tuple[str, int, int]], cutoff: float) -> dict[int, tuple[int, int]]:
        """Row -> (start, end) of its run, for the phrases found."""
        n = self.n
        runs = [" ".join(w for w, _, _ in spans[i:i + n]) for i in range(len(spans) - n + 1)]
        scores = _scores(self.texts, runs, cutoff)  # 0 below the cut-off
        best = {int(row): (int(scores[row].argmax()), float(scores[row].max()))
                for row in numpy.flatnonzero(scores.max(axis=1))}
        for keep, (texts, rows) in self.cuts.items():
            # a cut differs from its run only where the run is longer, so only there can the
            # best cut beat the best whole run (elsewhere it is a whole run's score again)
            longer = [i for i, run in enumerate(runs) if len(run) > keep]
            if not longer:
                continue
            cut = _scores(texts, [runs[i][:keep] for i in longer], cutoff)
            for k in numpy.flatnonzero(cut.max(axis=1)):
                row, score = rows[k], float(cut[k].max())
                if score > best.get(row, (-1, 0.0))[1]:
                    best[row] = (longer[int(cut[k].argmax())], score)
        return {row: (spans[i][1], spans[i + n - 1][2]) for row, (i, _) in best.items()}


def _scores(phrases: list[str], choices: list[str], cutoff: float) -> Any:
    return process.cdist(phrases, choices, scorer=fuzz.ratio, score_cutoff=cutoff, dtype=numpy.float64)


@cache
def builtin(language: str) -> dict[str, Any]:
    """flows/data/phrases/<language>.yaml: urgent categories, not_urgent, topics, handoff."""
    path = DATA_DIR / "phrases" / f"{language}.yaml"
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return data if isinstance(data, dict) else {}
