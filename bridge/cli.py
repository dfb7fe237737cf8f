"""The `bridge` command: run, check-config, status, report, dlq list / replay / drop, db upgrade /
backfill, contact export / erase, triage train / eval."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bridge import __version__, schema
from bridge.config import Settings, load, secrets_in
from bridge.connection import check_server, close, connect, unreachable, where, without_password
from bridge.embedded import socket_path, socket_url
from bridge.errors import BridgeError, ConfigError

if TYPE_CHECKING:
    from bridge.store import Store

DEFAULT_CONFIG = "bridge.yaml"


def _config_path(arg: str | None) -> str | None:
    """--config, else $BRIDGE_CONFIG, else ./bridge.yaml when present, else built-in defaults."""
    if arg:
        return arg
    if os.environ.get("BRIDGE_CONFIG"):
        return os.environ["BRIDGE_CONFIG"]
    return DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None


def _fail(message: str, code: int = 2) -> int:
    print(f"bridge: {message}", file=sys.stderr)
    return code


def cmd_check_config(args: argparse.Namespace) -> int:
    from bridge.runner import build_steps

    path = _config_path(args.config)
    try:
        settings, channels = load(path)
        build_steps(settings, channels)  # the flows' own settings and files (flows.kb.path, ...)
    except ConfigError as exc:
        print(f"{path or '(built-in defaults)'}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"{path or '(built-in defaults)'}: OK")
    print(f"  redis: {where(settings.redis)}"
          + (f", writes wait for {settings.redis.wait_replicas} replica(s)" if settings.redis.wait_replicas else ""))
    print(f"  channels: {', '.join(sorted(channels)) or '(none)'}")
    print(f"  agents' side: {', '.join(settings.agents.channels) or '(none)'}")
    print(f"  queues: {', '.join(sorted(settings.queues))}")
    print(f"  engine: {settings.engine.partitions} partitions, steps {', '.join(settings.engine.steps)}")
    routes, warnings = _where_cases_go(settings, channels)
    for line in routes:
        print(f"  {line}")
    for warning in warnings:
        print(f"warning: {warning}")
    return 0


def _where_cases_go(settings: Settings, channels: Any) -> tuple[list[str], list[str]]:
    """Where urgent escalations and routine tickets go, and warnings when no person sees them."""
    agents = [c for c in settings.agents.channels if c in channels]
    emailed = "email" in channels
    routes = [f"urgent escalations -> {', '.join(agents) or 'nobody (no agents channel)'}"]
    for name, queue in sorted(settings.queues.items()):
        targets = [f"email to {queue.email}"] if emailed else []
        targets += [f"{c} (agents told)" for c in agents if c != "email"]
        routes.append(f"routine queue {name} -> {', '.join(targets) or 'nobody (kept in Redis only)'}")
    warnings = []
    if not agents:
        warnings.append("urgent escalations reach no person: agents.channels is empty, yet customers are told "
                        "the team was alerted; add an agents' channel (widget with its console, slack or email)")
    if not agents and not emailed:
        warnings.append("routine queues reach no person: no agents' channel and no email channel "
                        "(channels.email) to send the tickets to queues.<name>.email")
    return routes, warnings


def cmd_run(args: argparse.Namespace) -> int:
    from bridge import logs
    from bridge.runner import Bridge, secrets_of, serve

    path = _config_path(args.config)
    try:
        settings, channels = load(path)
    except ConfigError as exc:
        return _fail(str(exc))
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            return _fail(f"--port: {args.port} is not a TCP port (0-65535)")
        settings = settings.model_copy(update={"http": settings.http.model_copy(update={"port": args.port})})
    logs.setup(settings.log.level, settings.log.format, [*secrets_of(channels), *secrets_in(settings)])
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    def started(bridge: Bridge) -> None:
        url = settings.public_url
        if not settings.http.public_url and bridge.port:  # --port 0: the port the system chose
            bound = settings.http.model_copy(update={"port": bridge.port})
            url = settings.model_copy(update={"http": bound}).public_url
        print(f"bridge running: {url}  (channels: {', '.join(sorted(bridge.adapters)) or 'none'};"
              " Ctrl-C stops)", file=sys.stderr, flush=True)
        for line in getattr(bridge, "banner", []):
            print(line, file=sys.stderr, flush=True)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(settings, channels, on_started=started))
    except OSError as exc:
        address = f"{settings.http.host}:{settings.http.port}"
        if exc.errno == errno.EADDRINUSE:
            return _fail(f"http.port {settings.http.port}: {address} is already in use (another bridge or program "
                         "listens there); stop it, or choose another port (http.port in the config, or --port)")
        if exc.errno == errno.EADDRNOTAVAIL:
            return _fail(f"http.host {settings.http.host!r}: not an address of this machine ({exc.strerror})")
        raise
    print("bridge stopped", file=sys.stderr)
    return 0


def _store(redis: aioredis.Redis, settings: Settings) -> Store:
    from bridge.store import Store

    return Store(redis, partitions=settings.engine.partitions)


def _redis_for(settings: Settings) -> aioredis.Redis:
    if settings.redis.url or settings.redis.sentinels:
        return connect(settings.redis, retries=0, connect_timeout_s=3)
    if not socket_path(settings.redis.data_dir).exists():
        raise BridgeError(f"no Redis URL is configured and no embedded Redis runs in {settings.redis.data_dir}; "
                          "is `bridge run` running (with the same --config and working directory)?")
    return connect(settings.redis, socket_url(settings.redis.data_dir), retries=0, connect_timeout_s=3)


async def _with_redis(args: argparse.Namespace, action: Any) -> Any:
    try:
        settings, _ = load(_config_path(args.config))
    except ConfigError as exc:
        raise BridgeError(str(exc)) from None
    redis = _redis_for(settings)
    try:
        try:
            await redis.ping()
        except (OSError, RedisError) as exc:
            raise BridgeError(f"cannot reach Redis at {where(settings.redis)}: {unreachable(exc, settings.redis)}; "
                              "check that setting "
                              "and that Redis runs") from None
        try:
            await check_server(redis, settings.redis)
            await schema.check(redis, settings.engine.partitions)
            return await action(redis, settings)
        except RedisError as exc:
            raise BridgeError(f"Redis at {where(settings.redis)} failed: {exc}") from None
    finally:
        await close(redis)


def cmd_status(args: argparse.Namespace) -> int:
    from bridge import status

    result = asyncio.run(_with_redis(args, status.gather))
    print(json.dumps(result, indent=2) if args.json else status.render(result))
    broken = [n for n, r in result["adapters"].items() if r.get("state") == "broken"]
    return 3 if broken else 0


def cmd_dlq_list(args: argparse.Namespace) -> int:
    from bridge.bus import Bus
    from bridge.model import decode

    async def action(redis: aioredis.Redis, settings: Settings) -> list[dict[str, Any]]:
        rows = await Bus(redis, partitions=settings.engine.partitions).dead_letters(count=args.limit)
        for row in rows:
            payload = row.pop("payload")
            try:
                message = decode(payload)
                row["message"] = {"kind": message.kind, "channel": message.channel, "address": message.address,
                                  "conversation_id": message.conversation_id, "text": message.text[:200]}
            except Exception:
                row["message"] = {"undecodable": payload[:200].decode(errors="replace")}
        return rows

    rows = asyncio.run(_with_redis(args, action))
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print("no dead letters")
    for row in rows:
        m = row["message"]
        target = f"{m.get('channel', '?')}:{m.get('address', '')}" if "kind" in m else "(undecodable)"
        print(f"{row['dlq_id']}  {row['stream'][len('bridge:'):]}  {target}  {row['reason']}")
        if row.get("lane"):
            print(f"    lane {row['lane']!r}: later sends to it wait until its letters are replayed or dropped")
        if m.get("text"):
            print(f"    {m['text']!r}")
    return 0


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    from bridge.bus import Bus

    if not args.all and not args.ids:
        return _fail("give dead-letter ids (from `bridge dlq list`) or --all")

    async def action(redis: aioredis.Redis, settings: Settings) -> tuple[int, list[str]]:
        bus = Bus(redis, partitions=settings.engine.partitions)
        missing = [] if args.all else await _unknown_dead_letters(bus, args.ids)
        found = [i for i in args.ids if i not in missing]
        count = await bus.replay(None) if args.all else await bus.replay(found) if found else 0
        return count, missing

    count, missing = asyncio.run(_with_redis(args, action))
    print(f"replayed {count} dead letter(s) (an address's held messages go back with it, in their order)")
    return _fail(_not_found(missing), code=1) if missing else 0


async def _unknown_dead_letters(bus: Any, ids: list[str]) -> list[str]:
    known = {row["dlq_id"] for row in await bus.dead_letters(count=1_000_000)}
    return list(dict.fromkeys(i for i in ids if i not in known))


def _not_found(ids: list[str]) -> str:
    return f"not found: {', '.join(ids)} (no such dead letter; see `bridge dlq list`)"


def cmd_dlq_drop(args: argparse.Namespace) -> int:
    from bridge.bus import Bus

    async def action(redis: aioredis.Redis, settings: Settings) -> tuple[int, list[str]]:
        bus = Bus(redis, partitions=settings.engine.partitions)
        missing = await _unknown_dead_letters(bus, args.ids)
        return await bus.drop(args.ids), missing

    count, missing = asyncio.run(_with_redis(args, action))
    print(f"dropped {count} dead letter(s); an address with none left takes new messages again")
    return _fail(_not_found(missing), code=1) if missing else 0


def cmd_report(args: argparse.Namespace) -> int:
    import time

    from bridge.report import RedisSource, SqlSource, write_report

    since_ms = int((time.time() - args.days * 86_400) * 1000) if args.days else None
    try:
        if args.since:
            since_ms = _date_ms(args.since)
        until_ms = _date_ms(args.until) if args.until else None
    except ValueError as exc:
        return _fail(f"--since/--until: {exc} (write a date as YYYY-MM-DD)")

    async def write(source: Any) -> Path:
        try:
            return await write_report(source, Path(args.out), since_ms=since_ms, until_ms=until_ms)
        except OSError as exc:  # the directory, not Redis
            raise BridgeError(f"--out {args.out}: cannot write the report there: "
                              f"{exc.strerror or exc} ({exc.filename or args.out})") from None

    if args.source == "sql":
        from bridge.history.reader import Reader

        try:
            settings, _ = load(_config_path(args.config))
        except ConfigError as exc:
            return _fail(str(exc))
        path = asyncio.run(_with_history(settings, lambda engine: write(SqlSource(Reader(engine)))))
    else:
        path = asyncio.run(_with_redis(args, lambda redis, settings: write(RedisSource(_store(redis, settings)))))
    print(f"report written: {path} (and conversations.csv, transcripts.csv in {path.parent})")
    return 0


def _date_ms(text: str) -> int:
    import datetime as dt

    day = dt.date.fromisoformat(text)
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def _history_name(settings: Settings) -> str:
    if settings.history.url:
        return f"history.url {without_password(settings.history.url)}"
    return f"the SQLite file in redis.data_dir {settings.redis.data_dir}"


async def _with_history(settings: Settings, action: Any) -> Any:
    """Run ``action(engine)`` on the history database; a database that does not answer is
    one line naming the setting."""
    from bridge.history import db

    if not settings.history.enabled:
        raise BridgeError("history.enabled is false: there is no SQL history to work on")
    engine = db.open_engine(settings.history_url)
    try:
        return await action(engine)
    except db.UNAVAILABLE as exc:
        raise BridgeError(f"cannot use the history database ({_history_name(settings)}): "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    finally:
        await engine.dispose()


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from bridge.history import db

    try:
        settings, _ = load(_config_path(args.config))
    except ConfigError as exc:
        return _fail(str(exc))

    async def action(engine: Any) -> str | None:
        await db.upgrade(engine)
        return await db.revision(engine)

    revision = asyncio.run(_with_history(settings, action))
    print(f"history schema at revision {revision} ({_history_name(settings)})")
    return 0


def cmd_db_backfill(args: argparse.Namespace) -> int:
    from bridge.history import db
    from bridge.history.backfill import backfill
    from bridge.history.writer import Writer

    async def action(redis: aioredis.Redis, settings: Settings) -> tuple[int, int, int]:
        async def run(engine: Any) -> tuple[int, int, int]:
            await db.upgrade(engine)
            return await backfill(_store(redis, settings), Writer(engine))

        return await _with_history(settings, run)  # type: ignore[no-any-return]

    conversations, contacts, refs = asyncio.run(_with_redis(args, action))
    print(f"backfilled {conversations} conversation(s), {contacts} contact(s) and {refs} thread ref(s) "
          "into the history")
    return 0


def _privacy(args: argparse.Namespace, act: Any) -> Any:
    from bridge.bus import Bus
    from bridge.history import db
    from bridge.history.privacy import Privacy

    async def action(redis: aioredis.Redis, settings: Settings) -> Any:
        async def run(engine: Any) -> Any:
            if engine is not None:
                await db.upgrade(engine)
            privacy = Privacy(store=_store(redis, settings), bus=Bus(redis, partitions=settings.engine.partitions),
                              history=engine)
            try:
                return await act(privacy)
            except LookupError as exc:
                raise BridgeError(str(exc)) from None

        if not settings.history.enabled:  # Redis is all there is
            return await run(None)
        return await _with_history(settings, run)

    return asyncio.run(_with_redis(args, action))


def cmd_contact_export(args: argparse.Namespace) -> int:
    data = _privacy(args, lambda privacy: privacy.export(args.id))
    out = Path(args.out or f"contact-{args.id}.json")
    try:
        out.write_text(json.dumps(data, ensure_ascii=False, indent=2,
                                  default=lambda v: v.decode(errors="replace") if isinstance(v, bytes) else str(v)))
    except OSError as exc:
        return _fail(f"--out {out}: cannot write there: {exc.strerror or exc}")
    print(f"exported contact {args.id}: {out}")
    return 0


def cmd_contact_erase(args: argparse.Namespace) -> int:
    counts = _privacy(args, lambda privacy: privacy.erase(args.id, by=args.by))
    print(f"erased contact {args.id}: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(counts.items())))
    return 0


def _triage(args: argparse.Namespace, name: str, extra: Any) -> int:
    """Run a triage tool with the store's labels (or without, --no-labels)."""
    from bridge import registry

    tool = registry.load(name)
    if args.no_labels:
        try:
            settings, _ = load(_config_path(args.config))
        except ConfigError as exc:
            raise BridgeError(str(exc)) from None
        lines = asyncio.run(tool(None, *extra(settings)))
    else:
        lines = asyncio.run(_with_redis(args, lambda redis, settings: tool(_store(redis, settings), *extra(settings))))
    print("\n".join(lines))
    return 0


def cmd_triage_train(args: argparse.Namespace) -> int:
    from bridge import registry

    return _triage(args, registry.TRIAGE_TRAIN, lambda settings: [settings.redis.data_dir])


def cmd_triage_eval(args: argparse.Namespace) -> int:
    from bridge import registry

    return _triage(args, registry.TRIAGE_EVAL, lambda settings: [[Path(p) for p in args.holdout]])


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="bridge", description="Customer-support bridge.")
    root.add_argument("--version", action="version", version=f"bridge {__version__}")
    sub = root.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", "-c", help=f"YAML config (default: $BRIDGE_CONFIG or ./{DEFAULT_CONFIG})")
        return p

    run = command("run", "Run every configured part in this process until SIGTERM/SIGINT.")
    run.add_argument("--port", type=int, help="HTTP port (default: http.port from the config, else 8080)")
    run.set_defaults(func=cmd_run)
    command("check-config", "Validate the config; name every bad key and the fix.").set_defaults(
        func=cmd_check_config)
    status = command("status", "Streams, pending, lag, dead letters and adapter health.")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
    report = command("report", "Write an HTML report with charts and CSV exports of conversations.")
    report.add_argument("--out", default="report", help="output directory (default: ./report)")
    report.add_argument("--days", type=float, default=None, help="only conversations of the last N days")
    report.add_argument("--since", help="only conversations created on or after this date (YYYY-MM-DD, UTC)")
    report.add_argument("--until", help="only conversations created before this date (YYYY-MM-DD, UTC)")
    report.add_argument("--source", choices=["redis", "sql"], default="redis",
                        help="redis: the working set (default); sql: the history, every conversation however old")
    report.set_defaults(func=cmd_report)
    dlq = sub.add_parser("dlq", help="Dead letters: list, replay and drop.")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = dlq_sub.add_parser("list", help="List dead letters with their reasons.")
    listing.add_argument("--config", "-c")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_dlq_list)
    replay = dlq_sub.add_parser("replay", help="Put dead letters back on their stream.")
    replay.add_argument("--config", "-c")
    replay.add_argument("ids", nargs="*", help="dead-letter ids from `bridge dlq list`")
    replay.add_argument("--all", action="store_true", help="replay every dead letter")
    replay.set_defaults(func=cmd_dlq_replay)
    drop = dlq_sub.add_parser("drop", help="Delete dead letters for good (their address goes on).")
    drop.add_argument("--config", "-c")
    drop.add_argument("ids", nargs="+", help="dead-letter ids from `bridge dlq list`")
    drop.set_defaults(func=cmd_dlq_drop)
    database = sub.add_parser("db", help="The SQL history: schema upgrade, backfill from Redis.")
    db_sub = database.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="Create or upgrade the history's schema (Alembic migrations).")
    upgrade.set_defaults(func=cmd_db_upgrade)
    fill = db_sub.add_parser("backfill", help="Write every conversation, transcript and contact Redis holds "
                                              "into the history (safe to repeat).")
    fill.set_defaults(func=cmd_db_backfill)
    contact = sub.add_parser("contact", help="Data-protection requests: export or erase what is held about a contact.")
    contact_sub = contact.add_subparsers(dest="contact_command", required=True)
    export = contact_sub.add_parser("export", help="Write a JSON file with everything held about the contact "
                                                   "(Redis and the SQL history).")
    export.add_argument("id", help="the contact id")
    export.add_argument("--out", help="the JSON file (default: ./contact-<id>.json)")
    export.set_defaults(func=cmd_contact_export)
    erase = contact_sub.add_parser("erase", help="Remove the contact, its conversations and messages from Redis and "
                                                 "the SQL history; the erasure is recorded without personal data.")
    erase.add_argument("id", help="the contact id")
    erase.add_argument("--by", default="cli", help="who asked (kept with the erasure record)")
    erase.set_defaults(func=cmd_contact_erase)
    for p in (upgrade, fill, export, erase):
        p.add_argument("--config", "-c")
    triage = sub.add_parser("triage", help="The triage model: train it on agent corrections, evaluate it.")
    triage_sub = triage.add_subparsers(dest="triage_command", required=True)
    train = triage_sub.add_parser("train", help="Train on the shipped set plus agent corrections; write the "
                                                "next model version into the data directory.")
    evaluate = triage_sub.add_parser("eval", help="Per-language precision and recall: cross-validated and on a "
                                                  "held-out split never trained on.")
    evaluate.add_argument("--holdout", action="append", default=[], help="another labelled YAML file to hold out")
    for p, func in ((train, cmd_triage_train), (evaluate, cmd_triage_eval)):
        p.add_argument("--config", "-c")
        p.add_argument("--no-labels", action="store_true", help="the shipped set only (no Redis needed)")
        p.set_defaults(func=func)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BridgeError as exc:  # every command's expected failure: one line naming the fix
        return _fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
