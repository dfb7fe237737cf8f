"""A small learned triage model beside the rules: urgency and topic from character n-grams.

scikit-learn (the ``flows`` extra): TF-IDF over character n-grams within word boundaries
(1-4, which reads Chinese without a segmenter and survives typos and inflections), then
linear SVMs: one for urgency (calibrated to a probability) and one for the topic (its
scores turned into a confidence by softmax). It trains in about a second
on the labelled set shipped in flows/data/triage/ plus the deployment's own labels (agent
corrections, see flows/labels.py).

A trained model is a file in the data directory, ``<redis.data_dir>/triage/model-v<N>.pkl``
(N counts up; the newest is used; ``bridge triage train`` writes the next one). With no
file, the shipped set is trained at start, in a thread: nothing here runs on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import pickle
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from bridge.turn import Turn
from flows.common import DATA_DIR, is_customer_text

log = logging.getLogger("bridge.triage")

TRAIN_DIR = DATA_DIR / "triage"
MODEL_PREFIX = "model-v"
# the model reads at most this much of a message: its start and its end
HEAD_CHARS = 1500
TAIL_CHARS = 500
FORMAT = 2  # bumped when the pickled layout changes


@dataclass(frozen=True)
class Example:
    text: str
    lang: str
    urgent: bool
    topic: str = "general"
    source: str = "shipped"  # shipped | agent


def capped(text: str) -> str:
    """The part of a message triage reads: its first HEAD_CHARS and last TAIL_CHARS characters."""
    if len(text) <= HEAD_CHARS + TAIL_CHARS:
        return text
    return text[:HEAD_CHARS] + " … " + text[-TAIL_CHARS:]


_DIGITS = re.compile(r"\d")


def prepare(text: str) -> str:
    """What the vectorizer sees: capped, lower case, every digit the same (order numbers
    and dates say nothing about urgency)."""
    return _DIGITS.sub("0", capped(text).lower())


@cache
def shipped_examples() -> tuple[Example, ...]:
    """The labelled set shipped with the project (flows/data/triage/train_*.yaml)."""
    out: list[Example] = []
    for path in sorted(TRAIN_DIR.glob("train_*.yaml")):
        default_lang = path.stem.removeprefix("train_")
        for item in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
            out.append(Example(text=str(item["text"]), lang=str(item.get("lang") or default_lang),
                               urgent=bool(item["urgent"]), topic=str(item.get("topic") or "general")))
    return tuple(out)


@dataclass
class TriageModel:
    """The fitted vectorizer and classifiers, with what they were trained on."""

    vectorizer: Any
    urgency: Any
    topic: Any
    version: int = 0
    trained_ms: int = 0
    examples: int = 0
    labels: int = 0  # of which agent corrections
    meta: dict[str, Any] = field(default_factory=dict)

    def predict(self, text: str) -> tuple[float, str, float]:
        """(probability urgent, topic, topic probability), for one message.

        The same arithmetic as scikit-learn's ``transform``, ``predict_proba`` and
        ``decision_function`` on one row, done directly on the fitted weights: per call,
        scikit-learn spends milliseconds validating its input, which would make triage the
        most expensive part of the hot path (measured: ~20 ms a message before, ~0.3 ms now;
        tests/test_flows_triage_trust.py checks both give the same answer)."""
        import numpy as np

        fast = _fast_parts(self)
        columns, values = fast.features(prepare(text))
        p_urgent = 0.0
        for coef, intercept, a, b in fast.urgency:
            score = float(coef[columns] @ values) + intercept
            p_urgent += 1.0 / (1.0 + np.exp(a * score + b))  # sklearn's sigmoid calibration
        p_urgent /= len(fast.urgency)
        scores = fast.topic_coef[:, columns] @ values + fast.topic_intercept
        weights = np.exp(5.0 * (scores - scores.max()))  # a sharper softmax: SVM scores sit near -1..1
        best = int(scores.argmax())
        return float(p_urgent), str(fast.topics[best]), float(weights[best] / weights.sum())

    def topic_probabilities(self, text: str) -> dict[str, float]:
        """Every topic's confidence for one message (the softmax of `predict`), summing to 1."""
        import numpy as np

        fast = _fast_parts(self)
        columns, values = fast.features(prepare(text))
        scores = fast.topic_coef[:, columns] @ values + fast.topic_intercept
        weights = np.exp(5.0 * (scores - scores.max()))
        return dict(zip(fast.topics, (weights / weights.sum()).tolist(), strict=True))

    def predict_slow(self, text: str) -> tuple[float, str, float]:
        """`predict` through scikit-learn's own calls (for checking the fast path)."""
        import numpy as np

        x = self.vectorizer.transform([prepare(text)])
        p_urgent = float(self.urgency.predict_proba(x)[0][list(self.urgency.classes_).index(True)])
        scores = self.topic.decision_function(x)[0]
        weights = np.exp(5.0 * (scores - scores.max()))
        best = int(scores.argmax())
        return p_urgent, str(self.topic.classes_[best]), float(weights[best] / weights.sum())


@dataclass
class _FastParts:
    """The fitted weights, laid out for one message at a time."""

    analyzer: Any
    vocabulary: dict[str, int]
    idf: Any
    urgency: list[tuple[Any, float, float, float]]  # per calibration fold: coef, intercept, a, b
    topic_coef: Any
    topic_intercept: Any
    topics: list[str]
    # the last text's row: urgency and topics read the same message one after the other
    # (one tuple, replaced whole: the triage thread and the loop may both read it)
    last: tuple[str, tuple[Any, Any]] | None = None

    def features(self, text: str) -> tuple[Any, Any]:
        """The TF-IDF row (sublinear tf, l2-normalised) as (column indices, values)."""
        last = self.last
        if last is not None and last[0] == text:
            return last[1]
        row = self._features(text)
        self.last = (text, row)
        return row

    def _features(self, text: str) -> tuple[Any, Any]:
        import numpy as np

        counts: dict[int, int] = {}
        for gram in self.analyzer(text):
            column = self.vocabulary.get(gram)
            if column is not None:
                counts[column] = counts.get(column, 0) + 1
        columns = np.fromiter(counts, dtype=np.int64, count=len(counts))
        values = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))) * self.idf[columns]
        norm = float(np.sqrt(values @ values))
        return columns, values / norm if norm else values


_FAST: dict[int, tuple[TriageModel, _FastParts]] = {}


def _fast_parts(model: TriageModel) -> _FastParts:
    cached = _FAST.get(id(model))
    if cached is not None and cached[0] is model:
        return cached[1]
    import numpy as np

    true_index = list(model.urgency.classes_).index(True)
    folds = []
    for calibrated in model.urgency.calibrated_classifiers_:
        estimator, calibrator = calibrated.estimator, calibrated.calibrators[0]
        sign = 1.0 if true_index == 1 else -1.0
        folds.append((np.asarray(estimator.coef_[0], dtype=np.float64) * sign, float(estimator.intercept_[0]) * sign,
                      float(calibrator.a_), float(calibrator.b_)))
    fast = _FastParts(analyzer=model.vectorizer.build_analyzer(), vocabulary=model.vectorizer.vocabulary_,
                      idf=np.asarray(model.vectorizer.idf_, dtype=np.float64), urgency=folds,
                      topic_coef=np.asarray(model.topic.coef_, dtype=np.float64),
                      topic_intercept=np.asarray(model.topic.intercept_, dtype=np.float64),
                      topics=[str(t) for t in model.topic.classes_])
    _FAST.clear()  # one model at a time in a process
    _FAST[id(model)] = (model, fast)
    return fast


def _pipeline_parts() -> tuple[Any, Any, Any]:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, min_df=1,
                                 max_features=200_000, dtype=_float32())
    # a fixed seed: the same labels always give the same model (and the same decisions)
    urgency = CalibratedClassifierCV(LinearSVC(C=0.5, class_weight="balanced", random_state=0), cv=3)
    topic = LinearSVC(C=0.5, class_weight="balanced", random_state=0)
    return vectorizer, urgency, topic


def _float32() -> Any:
    import numpy as np

    return np.float32


def train(examples: list[Example] | tuple[Example, ...]) -> TriageModel:
    """Fit on these examples (seconds on a CPU for a few thousand)."""
    if len({e.urgent for e in examples}) < 2:
        raise ValueError("training needs both urgent and routine examples")
    vectorizer, urgency, topic = _pipeline_parts()
    x = vectorizer.fit_transform([prepare(e.text) for e in examples])
    urgency.fit(x, [e.urgent for e in examples])
    topic.fit(x, [e.topic for e in examples])
    return TriageModel(vectorizer, urgency, topic, trained_ms=int(time.time() * 1000), examples=len(examples),
                       labels=sum(e.source == "agent" for e in examples))


# -- files in the data directory ---------------------------------------------------------


def model_dir(data_dir: Path) -> Path:
    return data_dir / "triage"


def versions(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in directory.glob(f"{MODEL_PREFIX}*.pkl"):
        number = path.stem.removeprefix(MODEL_PREFIX)
        if number.isdigit():
            found.append((int(number), path))
    return sorted(found)


def save(model: TriageModel, directory: Path) -> Path:
    """Write the model as the next version; returns its path."""
    import sklearn

    directory.mkdir(parents=True, exist_ok=True)
    existing = versions(directory)
    model.version = (existing[-1][0] if existing else 0) + 1
    model.meta = {**model.meta, "format": FORMAT, "sklearn": sklearn.__version__}
    path = directory / f"{MODEL_PREFIX}{model.version}.pkl"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    tmp.replace(path)
    return path


def load_latest(directory: Path) -> TriageModel | None:
    """The newest model file this scikit-learn can read, or None. The files are our own
    (written by `save` into the deployment's data directory), so unpickling them is safe."""
    import sklearn

    for _, path in reversed(versions(directory)):
        try:
            model = pickle.loads(path.read_bytes())
        except Exception as exc:
            log.warning("triage model %s unreadable, skipped: %r", path, exc)
            continue
        if not isinstance(model, TriageModel) or model.meta.get("format") != FORMAT \
                or model.meta.get("sklearn") != sklearn.__version__:
            log.warning("triage model %s was written by another version, skipped", path)
            continue
        return model
    return None


# -- one model per process, ready off the event loop ----------------------------------------


class ModelHolder:
    """Loads (or trains) the model in a thread; steps await `ready()` before the first use."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._future: concurrent.futures.Future[TriageModel | None] = concurrent.futures.Future()
        # not a daemon: CPython 3.11 ends a daemon thread that asks for the GIL back during
        # finalization by unwinding it (pthread_exit), and unwound through scikit-learn's C++
        # frames that aborts the process ("terminate called without an active exception":
        # a bridge stopped a few seconds after it started, once in CI); exit waits instead
        thread = threading.Thread(target=self._work, name="triage-model")
        thread.start()

    def _work(self) -> None:
        try:
            model = load_latest(self.directory) if self.directory is not None else None
            if model is None:
                model = shared_default()
            self._future.set_result(model)
        except Exception as exc:  # the rules still work without a model
            log.exception("triage model unavailable; rules only")
            self._future.set_exception(exc)

    def wait(self, timeout_s: float | None = None) -> TriageModel | None:
        """Block until ready (for scripts and benchmarks, never on the event loop)."""
        try:
            return self._future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            raise
        except Exception:
            return None

    async def ready(self) -> TriageModel | None:
        if self._future.done():
            return self.wait()
        try:
            return await asyncio.wrap_future(self._future)
        except Exception:
            return None

    def current(self) -> TriageModel | None:
        """The model if ready, else None (never waits)."""
        return self.wait() if self._future.done() else None


_default_lock = threading.Lock()
_default: TriageModel | None = None


def shared_default() -> TriageModel:
    """The model trained on the shipped set, once per process."""
    global _default
    with _default_lock:
        if _default is None:
            _default = train(shipped_examples())
        return _default


_holders: dict[Path | None, ModelHolder] = {}
_holders_lock = threading.Lock()


def holder_for(directory: Path | None) -> ModelHolder:
    """One holder per model directory per process (every step built shares it)."""
    with _holders_lock:
        found = _holders.get(directory)
        if found is None:
            found = _holders[directory] = ModelHolder(directory)
        return found


def forget_holders() -> None:
    """Drop the cached holders (after `bridge triage train` in the same process, in tests)."""
    with _holders_lock:
        _holders.clear()


class AfterModel:
    """A step that waits (without blocking the loop) for the learned model once, then
    decides. `ready` and `decide` apart let `flows.triage.Triage` decide a long text in a
    thread."""

    def __init__(self, decide: Callable[[Turn], None], holder: ModelHolder | None) -> None:
        self.decide = decide
        self.holder = holder

    async def ready(self, turn: Turn) -> None:
        if self.holder is not None and is_customer_text(turn):
            await self.holder.ready()

    async def __call__(self, turn: Turn) -> None:
        await self.ready(turn)
        self.decide(turn)
