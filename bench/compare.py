"""Two versions of the code, measured alternately in the same minutes.

    python -m bench.compare BEFORE [AFTER] [--rounds 4] [--n 60000] [--stages]

BEFORE and AFTER are git revisions (AFTER defaults to the working tree as it is, with its
uncommitted changes). On a shared machine the speed moves by a third from one minute to
the next, so one run of each says little about a change of a few per cent: the rounds
alternate the two (BEFORE, AFTER, BEFORE, AFTER, ...) and the means, with each side's
spread (lowest-highest), come after each round's figures: a change smaller than the spread
is not shown by the run. Each revision is checked out in a temporary git worktree and run with this
interpreter, so both use the same packages.

Without ``--stages`` each run is ``python -m bench --no-isolation`` (throughput pairs, the
ratio, Python and redis-server CPU per message, and each of those over the raw loop's in
the same run: "×raw", which discounts the machine's speed); with it, ``python -m
bench.stages`` (each stage alone: publish, engine, dispatcher).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKING_TREE = "."

# `python -m bench`: the figures a row compares (medians of its pairs; compare runs one pair a round)
_BENCH_ROWS = {
    "bridge msg/s": re.compile(r"^throughput \(msg/s\)\s+[\d,]+\s+([\d,]+)", re.M),
    "raw msg/s": re.compile(r"^throughput \(msg/s\)\s+([\d,]+)", re.M),
    "python µs": re.compile(r"^python CPU per message \(us\)\s+[\d.]+\s+([\d.]+)", re.M),
    "redis µs": re.compile(r"^redis-server CPU per message \(us\)\s+[\d.]+\s+([\d.]+)", re.M),
    "ratio": re.compile(r"^bridge/raw throughput ratio: ([\d.]+)", re.M),
}
# the bridge's CPU over the raw loop's in the same run: a view that discounts the machine's
# speed (on 2026-12-05 the same code read 12.2-17.2 µs of redis-server a message as the raw
# loop's moved from 4.1 to 6.9), though not its noise
_OVER_RAW = {
    "python ×raw": re.compile(r"^python CPU per message \(us\)\s+([\d.]+)\s+([\d.]+)", re.M),
    "redis ×raw": re.compile(r"^redis-server CPU per message \(us\)\s+([\d.]+)\s+([\d.]+)", re.M),
}
# `python -m bench.stages`: "engine   21,831 msg/s   35.1   16.6"
_STAGE = re.compile(r"^(publish|engine|dispatch)\s+[\d,]+ msg/s\s+([\d.]+)\s+([\d.]+)", re.M)


def figures(output: str, stages: bool) -> dict[str, float]:
    """The numbers of one run's output, by name; a name missing from the output is left out."""
    found: dict[str, float] = {}
    if stages:
        for stage, python_us, redis_us in _STAGE.findall(output):
            found[f"{stage} python µs"] = float(python_us)
            found[f"{stage} redis µs"] = float(redis_us)
        return found
    for name, pattern in _BENCH_ROWS.items():
        match = pattern.search(output)
        if match:
            found[name] = float(match.group(1).replace(",", ""))
    for name, pattern in _OVER_RAW.items():
        match = pattern.search(output)
        if match and float(match.group(1)) > 0:
            found[name] = float(match.group(2)) / float(match.group(1))
    return found


@contextlib.contextmanager
def checkout(revision: str) -> Iterator[Path]:
    """The code of ``revision`` in a temporary worktree (the working tree itself for ".")."""
    if revision == WORKING_TREE:
        yield ROOT
        return
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), revision],
                       check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def run_once(tree: Path, args: argparse.Namespace) -> dict[str, float]:
    if args.stages:
        command = [sys.executable, "-m", "bench.stages", "--n", str(args.n)]
    else:
        command = [sys.executable, "-m", "bench", "--no-isolation", "--repeat", "1", "--n", str(args.n),
                   "--latency-n", "1000", "--triage-n", "100"]  # one pair a round: the rounds repeat
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench.compare: {' '.join(command[1:])} failed in {tree}:\n{done.stderr[-2000:]}")
    return figures(done.stdout, args.stages)


def main(args: argparse.Namespace) -> None:
    before, after = args.before, args.after
    runs: dict[str, list[dict[str, float]]] = {before: [], after: []}
    with checkout(before) as before_tree, checkout(after) as after_tree:
        for round_ in range(1, args.rounds + 1):
            for label, tree in ((before, before_tree), (after, after_tree)):
                row = run_once(tree, args)
                runs[label].append(row)
                print(f"round {round_} {label:<12} " + "  ".join(f"{k} {v:,.2f}" for k, v in row.items()), flush=True)
    names = [n for n in runs[before][0] if all(n in r for rs in runs.values() for r in rs)]
    print()
    print(f"{'mean of ' + str(args.rounds) + ' rounds':<24} {before:>14} {after:>14}   change   "
          f"(spread: {before}, {after})")
    for name in names:
        a, b = ([r[name] for r in runs[label]] for label in (before, after))
        mean_a, mean_b = statistics.fmean(a), statistics.fmean(b)
        change = f"{(mean_b - mean_a) / mean_a * 100:+.1f}%" if mean_a else "-"
        print(f"{name:<24} {mean_a:>14,.2f} {mean_b:>14,.2f}   {change:>6}   "
              f"({_spread(a)}, {_spread(b)})")


def _spread(values: list[float]) -> str:
    digits = 2 if max(values) < 10 else 1 if max(values) < 1000 else 0
    return f"{min(values):,.{digits}f}-{max(values):,.{digits}f}"


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", help="a git revision")
    parser.add_argument("after", nargs="?", default=WORKING_TREE,
                        help="a git revision; default: the working tree as it is")
    parser.add_argument("--rounds", type=int, default=4, help="runs of each, alternating")
    parser.add_argument("--n", type=int, default=60_000, help="messages per run")
    parser.add_argument("--stages", action="store_true", help="each stage alone (bench.stages) instead")
    main(parser.parse_args())


if __name__ == "__main__":
    cli()
