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
        # the fuzzy phrases by word count, and within it by the length a run is cut to for
        # them: each group is scored against a text's runs in one call (rapidfuzz ``cdist``)
        self._fuzzy: dict[int, _Fuzzy] = {}
        self._fuzzy_row: dict[int, int] = {}  # index in _phrases -> its row in _fuzzy[words]
        for i, phrase in enumerate(self._phrases):
            if phrase.fuzzy:
                self._fuzzy_row[i] = self._fuzzy.setdefault(phrase.words, _Fuzzy(phrase.words)).add(phrase.text)

    def find(self, text: str, *, normalized: bool = False) -> list[Hit]:
        """Every phrase found in ``text``, at most one hit per phrase.

        The fuzzy phrases are scored against the text's runs of words a group at a time,
        not one call per phrase: a message is read against hundreds of phrases."""
        norm = text if normalized else normalize(text)
        hits: list[Hit] = []
        if not norm:
            return hits
        spans = [(m.group(), m.start(), m.end()) for m in _WORD.finditer(norm)]
        fuzzy: dict[int, dict[int, tuple[int, int]]] = {}  # word count -> row -> where
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
            if phrase.words not in fuzzy:
                fuzzy[phrase.words] = self._fuzzy[phrase.words].found(spans, self.fuzzy_cutoff)
            where = fuzzy[phrase.words].get(self._fuzzy_row[i])
            if where is not None:
                hits.append(Hit(phrase.group, phrase.text, phrase.language, *where, fuzzy=True))
        return hits


class _Fuzzy:
    """The fuzzy phrases of ``n`` words, and where each is most like a run of ``n`` words
    of a text: the better of the whole run and the run cut one letter past the phrase's
    length ("counterfiet" ~ "counterfeit", "shortages" ~ "shortage"; a tie keeps the whole
    run), the first run of that score, at the cut-off or above."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.texts: list[str] = []
        self.cuts: dict[int, tuple[list[str], list[int]]] = {}  # cut length -> texts, their rows

    def add(self, text: str) -> int:
        row = len(self.texts)
        self.texts.append(text)
        texts, rows = self.cuts.setdefault(len(text) + 1, ([], []))
        texts.append(text)
        rows.append(row)
        return row

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
