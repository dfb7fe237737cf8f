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
    longest: str = ""  # its longest word: a text without it cannot match the pattern


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
                                         len(text.replace(" ", "")) >= fuzzy_min_len, max(text.split(), key=len)))
        # the fuzzy phrases by word count and by the length a run is cut to for them: each
        # group is scored against a text's runs in one call (rapidfuzz ``cdist``)
        self._fuzzy_texts: dict[int, list[str]] = {}  # word count -> texts, in order
        self._cut_texts: dict[tuple[int, int], list[str]] = {}  # (word count, cut length) -> texts
        self._fuzzy_rows: dict[int, tuple[int, int]] = {}  # index in _phrases -> its rows in both
        for i, phrase in enumerate(self._phrases):
            if phrase.fuzzy:
                whole = self._fuzzy_texts.setdefault(phrase.words, [])
                cut = self._cut_texts.setdefault((phrase.words, len(phrase.text) + 1), [])
                self._fuzzy_rows[i] = (len(whole), len(cut))
                whole.append(phrase.text)
                cut.append(phrase.text)

    def find(self, text: str, *, normalized: bool = False) -> list[Hit]:
        """Every phrase found in ``text``, at most one hit per phrase.

        The fuzzy phrases of each word count are scored against every run of as many words
        in one call (rapidfuzz ``cdist``), not one call per phrase: a message is read
        against hundreds of phrases."""
        norm = text if normalized else normalize(text)
        hits: list[Hit] = []
        if not norm:
            return hits
        spans = [(m.group(), m.start(), m.end()) for m in _WORD.finditer(norm)]
        runs: dict[int, _Runs] = {}
        for i, phrase in enumerate(self._phrases):
            if phrase.pattern is None:
                pos = norm.find(phrase.text)
                if pos >= 0:
                    hits.append(Hit(phrase.group, phrase.text, phrase.language, pos, pos + len(phrase.text)))
                continue
            found = phrase.pattern.search(norm) if phrase.longest in norm else None
            if found:
                hits.append(Hit(phrase.group, phrase.text, phrase.language, found.start(), found.end()))
                continue
            if not phrase.fuzzy or len(spans) < phrase.words:
                continue
            if phrase.words not in runs:
                runs[phrase.words] = _Runs(spans, phrase.words, self._fuzzy_texts[phrase.words], self.fuzzy_cutoff)
            row, cut_row = self._fuzzy_rows[i]
            best = runs[phrase.words].best(row, len(phrase.text) + 1, cut_row, self._cut_texts, self.fuzzy_cutoff)
            if best is not None:
                hits.append(Hit(phrase.group, phrase.text, phrase.language, *best, fuzzy=True))
        return hits


class _Runs:
    """The runs of ``n`` words of a text, scored against the fuzzy phrases of ``n`` words:
    whole, and cut one letter past each phrase's length ("counterfiet" ~ "counterfeit",
    "shortages" ~ "shortage"), each group of phrases in one rapidfuzz call."""

    def __init__(self, spans: list[tuple[str, int, int]], n: int, phrases: list[str], cutoff: float) -> None:
        self.n = n
        self.choices = [" ".join(w for w, _, _ in spans[i:i + n]) for i in range(len(spans) - n + 1)]
        self.offsets = [(spans[i][1], spans[i + n - 1][2]) for i in range(len(spans) - n + 1)]
        scores = _scores(phrases, self.choices, cutoff)
        self.best_index: list[int] = scores.argmax(axis=1).tolist()  # the first run of the best score
        self.best_score: list[float] = scores.max(axis=1).tolist()  # 0 below the cut-off
        # a cut differs from its run only where the run is longer, so only there can the best
        # cut beat the best whole run (elsewhere it is a whole run's score again)
        self._cuts: dict[int, tuple[list[int], list[int], list[float]]] = {}

    def best(self, row: int, keep: int, cut_row: int, cut_texts: dict[tuple[int, int], list[str]],
             cutoff: float) -> tuple[int, int] | None:
        """Where the phrase of these rows is most like a run: the better of the whole runs
        and the runs cut to ``keep`` letters (a tie keeps the whole run), the first run of
        that score; None below the cut-off."""
        index, score = self.best_index[row], self.best_score[row]
        if score < cutoff:
            index, score = -1, 0.0
        if keep not in self._cuts:
            longer = [i for i, choice in enumerate(self.choices) if len(choice) > keep]
            if longer:
                scores = _scores(cut_texts[(self.n, keep)], [self.choices[i][:keep] for i in longer], cutoff)
                self._cuts[keep] = (longer, scores.argmax(axis=1).tolist(), scores.max(axis=1).tolist())
            else:
                self._cuts[keep] = ([], [], [])
        longer, cut_index, cut_score = self._cuts[keep]
        if longer and cut_score[cut_row] > score:  # 0 below the cut-off
            index = longer[cut_index[cut_row]]
        return None if index < 0 else self.offsets[index]


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
