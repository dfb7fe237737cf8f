"""The composition root: builds the bridge from config and runs every configured part in
one process (or the roles this process was given).

Start order: Redis (embedded when no URL) -> adapters -> web server -> engine, projector
and dispatchers. Stop order: web server (no new ingest) -> adapters' receiving -> engine
(the batch in hand is committed) -> projector and dispatchers (work in flight finishes)
-> the history database -> Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge import keys, registry, schema
from bridge.adapter import Adapter, AdapterContext, DeskSettings
from bridge.bus import Bus, consumer_name
from bridge.config import Settings
from bridge.connection import check_server, close, connect, unreachable, where
from bridge.contacts import ContactBook
from bridge.context import HealthBoard, RedisFanout, RedisState
from bridge.dispatcher import ChannelDispatcher
from bridge.embedded import EmbeddedRedis
from bridge.engine import Engine
from bridge.errors import BridgeError, ConfigError, StoreUnavailable
from bridge.history.archive import Archive
from bridge.history.db import open_engine
from bridge.history.privacy import Privacy
from bridge.history.projector import Projector
from bridge.history.reader import Reader
from bridge.httplimits import GuardedSite
from bridge.metrics import INBOUND_DUPLICATES, INBOUND_PUBLISHED
from bridge.model import Message, now_ms
from bridge.store import Store
from bridge.templates import Templates
from bridge.turn import FlowConfig, Step
from bridge.web import build_app

log = logging.getLogger("bridge.runner")


def secrets_of(configs: dict[str, BaseModel]) -> list[str]:
    """Every secret value in the channel configs, for log masking."""
    found: list[str] = []

    def walk(model: BaseModel) -> None:
        for _, value in model:
            if isinstance(value, SecretStr):
                found.append(value.get_secret_value())
            elif isinstance(value, BaseModel):
                walk(value)

    for config in configs.values():
        walk(config)
    return found


def build_steps(settings: Settings, channels: Iterable[str], *, clock_ms: Callable[[], int] = now_ms,
                store: Store | None = None) -> tuple[FlowConfig, list[Step]]:
    """The flows' config and the pipeline's steps (``commands`` first, then ``engine.steps``).
    A bad ``flows.<step>`` setting or file raises `ConfigError` naming the key."""
    flow_config = FlowConfig(
        settings=settings, channels=frozenset(channels), capabilities=registry.capabilities(channels),
        templates=Templates(settings.replies, settings.triage.default_language),
        clock_ms=clock_ms, store=store)
    names = registry.REQUIRED_FIRST + [s for s in settings.engine.steps if s not in registry.REQUIRED_FIRST]
    if settings.translation.enabled and "translation" not in names:
        # after triage (it reads the language), before routing (it holds a reply to translate)
        names.insert(names.index("routing") if "routing" in names else len(names), "translation")
    steps: list[Step] = []
    problems: list[str] = []
    for name in names:
        try:
            steps.append(registry.load(registry.steps()[name])(flow_config))
        except ConfigError as exc:  # go on: every bad setting is named at once
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return flow_config, steps


def desk_settings(settings: Settings) -> DeskSettings:
    translation = settings.translation  # what agent channels need to show translations (never the key)
    return DeskSettings(default_language=settings.triage.default_language,
                        urgent_mention=settings.agents.urgent_mention,
                        queue_slack_channels={name: queue.slack_channel for name, queue in settings.queues.items()
                                              if queue.slack_channel},
                        queues=tuple(settings.queues),
                        auto_assign_queues=frozenset(name for name, queue in settings.queues.items()
                                                     if queue.auto_assign),
                        translation_enabled=translation.enabled,
                        agents_language=translation.agents_language or settings.triage.default_language,
                        agent_languages=dict(translation.agent_languages))


class Bridge:
    """Every part of the bridge, wired from the config."""

    def __init__(self, settings: Settings, channel_configs: dict[str, BaseModel], *,
                 clock_ms: Callable[[], int] = now_ms, worker_id: str | None = None) -> None:
        self.settings = settings
        self.channel_configs = channel_configs
        self.clock_ms = clock_ms
        self.worker_id = worker_id or consumer_name()
        self.embedded: EmbeddedRedis | None = None
        self.adapters: dict[str, Adapter] = {}
        self.engine: Engine | None = None
        self.projector: Projector | None = None
        self.history: AsyncEngine | None = None
        self.dispatchers: list[ChannelDispatcher] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._web_runner: web.AppRunner | None = None
        self.port: int | None = None
        self._stop_requested = asyncio.Event()

    @property
    def roles(self) -> set[str]:
        return set(self.settings.roles)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        settings = self.settings
        url = settings.redis.url
        if not url and not settings.redis.sentinels:
            self.embedded = EmbeddedRedis(settings.redis.data_dir, settings.redis.server_binary,
                                          settings.redis.max_memory_mb)
            url = await self.embedded.start()
        self.redis = connect(settings.redis, url)
        try:
            await self.redis.ping()
        except Exception as exc:
            raise BridgeError(f"cannot reach Redis at {where(settings.redis)}: {unreachable(exc, settings.redis)}"
                              ) from None
        await check_server(self.redis, settings.redis)
        await schema.prepare(self.redis, settings.engine.partitions, lease_ttl_s=settings.engine.lease_ttl_s,
                             dedupe_ttl_s=settings.streams.dedupe_ttl_s)
        reader: Reader | None = None
        privacy: Privacy | None = None
        if settings.history.enabled:
            self.history = open_engine(settings.history_url)
            reader = Reader(self.history)
        self.store = Store(self.redis, partitions=settings.engine.partitions, outbox=settings.history.enabled,
                           archive=Archive(self.history) if self.history is not None else None)
        self.bus = Bus(self.redis, partitions=settings.engine.partitions, dedupe_ttl_s=settings.streams.dedupe_ttl_s,
                       dead_letter_max_len=settings.streams.dead_letter_max_len,
                       wait_replicas=settings.redis.wait_replicas, wait_timeout_ms=settings.redis.wait_timeout_ms,
                       ref_resolver=self.store.archived_refs if self.history is not None else None)
        if self.history is not None:
            privacy = Privacy(store=self.store, bus=self.bus, history=self.history)
        self.health = HealthBoard(self.redis, self.worker_id)
        fanout = RedisFanout(self.redis)
        contact_book = ContactBook(self.store)
        for name, config in self.channel_configs.items():
            cls = registry.adapter_class(name)
            ctx = AdapterContext(publish=self._publisher(name), state=RedisState(self.redis, name),
                                 conversations=self.store, fanout=fanout, report_health=self.health.reporter(name),
                                 public_url=settings.public_url, receive="ingest" in self.roles,
                                 private_dir=self.embedded.data_dir if self.embedded else None,
                                 contacts=contact_book, settings=desk_settings(settings), history=reader,
                                 privacy=privacy)
            adapter = cls(config, ctx)
            adapter.name = name
            self.adapters[name] = adapter
        if "web" in self.roles:
            await self._start_web()
            if not settings.http.public_url and settings.http.port == 0:
                for adapter in self.adapters.values():  # the port is known only now
                    adapter.ctx = dataclasses.replace(adapter.ctx, public_url=f"http://127.0.0.1:{self.port}")
        if "ingest" in self.roles or "dispatch" in self.roles:
            for name, adapter in self.adapters.items():
                await self.health.report(name, "starting", "")
                await adapter.start()
        if "engine" in self.roles:
            self.engine = self._build_engine()
            self._spawn(self.engine.run(), "engine")
        if "projector" in self.roles and settings.history.enabled:
            self.projector = self._build_projector()
            self._spawn(self.projector.run(), "projector")
        if "dispatch" in self.roles:
            for adapter in self.adapters.values():
                dispatcher = ChannelDispatcher(
                    bus=self.bus, adapter=adapter, worker_id=self.worker_id,
                    lease_ttl_s=settings.engine.lease_ttl_s, block_ms=settings.engine.block_ms,
                    batch_size=settings.engine.batch_size, claim_min_idle_s=settings.engine.claim_min_idle_s,
                    report_health=self.health.reporter(adapter.name), history=settings.history.enabled)
                self.dispatchers.append(dispatcher)
                self._spawn(dispatcher.run(), f"dispatch:{adapter.name}")
        self._spawn(self._janitor(), "janitor")
        self._spawn(self._health_checks(), "health-checks")
        log.info("bridge started", extra={"worker": self.worker_id, "roles": sorted(self.roles),
                                          "channels": sorted(self.adapters), "url": settings.public_url})

    def _publisher(self, channel: str) -> Callable[[Message], Any]:
        published, duplicates = INBOUND_PUBLISHED.labels(channel), INBOUND_DUPLICATES.labels(channel)
        timeout_s = self.settings.redis.publish_timeout_s

        async def publish(message: Message) -> bool:
            # a frozen Redis is not waited out: the platform hears "retry later" in time; if
            # the write lands after all, the platform's retry is deduplicated
            try:
                async with asyncio.timeout(timeout_s):  # no task of its own, unlike wait_for
                    stored = await self.bus.publish(message)
            except TimeoutError:
                raise StoreUnavailable(f"Redis did not store the message within {timeout_s} s "
                                       "(redis.publish_timeout_s)") from None
            (published if stored else duplicates).inc()
            return stored

        return publish

    def _build_engine(self) -> Engine:
        flow_config, steps = build_steps(self.settings, self.adapters, clock_ms=self.clock_ms, store=self.store)
        return Engine(bus=self.bus, store=self.store, flow_config=flow_config, steps=steps,
                      worker_id=self.worker_id, clock_ms=self.clock_ms)

    def _build_projector(self) -> Projector:
        assert self.history is not None
        history, engine = self.settings.history, self.settings.engine
        return Projector(bus=self.bus, engine=self.history, worker_id=self.worker_id, partitions=engine.partitions,
                         lease_ttl_s=engine.lease_ttl_s, store=self.store, batch_size=history.batch_size,
                         block_ms=engine.block_ms, retry_cap_s=history.retry_cap_s,
                         keep_in_redis_days=history.keep_in_redis_days,
                         retention_interval_s=history.retention_interval_s, queues=list(self.settings.queues),
                         clock_ms=self.clock_ms)

    async def _start_web(self) -> None:
        routes = [route for adapter in self.adapters.values() for route in adapter.routes()]
        app = build_app(routes, self)
        self._web_runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._web_runner.setup()
        site = GuardedSite(self._web_runner, self.settings.http)
        await site.start()
        self.port = site.port

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("a bridge task died; stopping", exc_info=exc, extra={"task": task.get_name()})
            self._stop_requested.set()

    async def _janitor(self) -> None:
        """Trim acknowledged stream entries now and then (never pending ones)."""
        partitions = self.settings.engine.partitions
        streams = [keys.inbound(p, partitions) for p in range(partitions)]
        streams += [s for name in self.adapters for s in keys.outbound_streams(name, partitions)]
        outboxes = [keys.outbox(p, partitions) for p in range(partitions)] if self.settings.history.enabled \
            else []
        while not self._stop_requested.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), self.settings.streams.trim_interval_s)
            try:
                for stream in streams:
                    await self.bus.trim(stream, self.settings.streams.max_len)
                for stream in outboxes:  # only what the projector acknowledged
                    await self.bus.trim(stream, keys.OUTBOX_KEEP)
            except Exception as exc:
                log.warning("trim failed", extra={"error": repr(exc)})

    async def _health_checks(self, every_s: float = 300.0) -> None:
        """Ask each platform whether it accepts our credentials (auth.test, getMe, ...), at
        start and every few minutes, so `bridge status` shows a revoked token."""
        while not self._stop_requested.is_set():
            for name, adapter in self.adapters.items():
                try:
                    state, detail = await asyncio.wait_for(adapter.check(), 15)
                except Exception as exc:
                    state, detail = "degraded", f"health check failed: {type(exc).__name__}: {exc}"
                await self.health.report(name, state, detail or "auth check passed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), every_s)

    async def wait(self) -> None:
        await self._stop_requested.wait()

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def stop(self) -> None:
        self._stop_requested.set()
        if self._web_runner is not None:
            await self._web_runner.cleanup()
            self._web_runner = None
        if self.engine is not None:
            self.engine.stop()
        for dispatcher in self.dispatchers:
            dispatcher.stop()
        if self.projector is not None:
            self.projector.stop()
        for task in self._tasks:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), 30)
            if not task.done():
                task.cancel()
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.debug("task ended with an error", extra={"task": task.get_name()})
        for name, adapter in self.adapters.items():
            try:
                await adapter.stop()
                await self.health.report(name, "stopped", "")
            except Exception:
                log.exception("adapter did not stop cleanly", extra={"channel": name})
        if self.history is not None:
            await self.history.dispose()
        if hasattr(self, "redis"):
            await close(self.redis)
        if self.embedded is not None:
            await self.embedded.stop()
        log.info("bridge stopped", extra={"worker": self.worker_id})


# the cyclic collector's thresholds once a bridge runs: a message's objects die by reference
# counting, so young collections are only needed as caches grow
GC_THRESHOLDS = (10_000, 50, 100)


def settle_heap() -> None:
    """Call once the bridge has started. What start-up loaded (modules, config, models) lives
    as long as the process: it is moved out of the cyclic collector's sight (`gc.freeze`),
    and young collections run less often. Before, the collector took 24 of 81 µs per message
    in `python -m bench` (py-spy --native; timed with gc.callbacks), mostly full collections
    walking every module's objects."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# redis-py's cluster client drops its node objects for a node that died or left the
# cluster with their connections still open; each one, collected, reports this through the
# loop (dozens per failover, at error level): what it means is logged already (the failover's
# connection errors), and the connections close with the objects
_REDIS_NODE_DROPPED = "Unclosed ClusterNode object"


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    if context.get("message") == _REDIS_NODE_DROPPED:
        log.debug("redis cluster node dropped with open connections", extra={"node": repr(context.get("client"))})
        return
    loop.default_exception_handler(context)


async def serve(settings: Settings, channel_configs: dict[str, BaseModel],
                on_started: Callable[[Bridge], None] | None = None) -> None:
    """Run until SIGTERM/SIGINT, then stop cleanly."""
    bridge = Bridge(settings, channel_configs)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, bridge.request_stop)
    loop.set_exception_handler(_loop_exception)
    try:
        await bridge.start()
        settle_heap()
        if on_started is not None:
            on_started(bridge)
        await bridge.wait()
    finally:
        await bridge.stop()
