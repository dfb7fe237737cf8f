"""Real servers for tests, on loopback: redis-server (and helpers to find free ports)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.timing import scaled

CLUSTER_PORT_MAX = 55_535  # a cluster node also listens on its port + 10000 (its bus)


def free_port(highest: int = 65_535) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port <= highest:
            return port


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port(highest=CLUSTER_PORT_MAX)
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port + 10_000)) != 0:
                return port


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + scaled(timeout_s)
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.01)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Poll ``predicate`` until true; TimeoutError naming ``what`` after ``timeout_s`` (scaled)."""
    deadline = time.monotonic() + scaled(timeout_s)
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {scaled(timeout_s):.0f}s waiting for {what}")
        time.sleep(0.05)


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: apt-get install -y redis-server")
    return binary


class RedisServer:
    """A private redis-server. ``aof=True`` keeps an append-only file (fsync always);
    ``replica_of`` (a port on 127.0.0.1) makes it a replica of that server; ``cluster=True``
    starts it in cluster mode (a node of no cluster yet: it owns no hash slot); ``options``
    are more ``--name value`` arguments."""

    def __init__(self, directory: Path, port: int, *, aof: bool = False, replica_of: int | None = None,
                 cluster: bool = False, options: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.port = port
        self.aof = aof
        self.replica_of = replica_of
        self.cluster = cluster
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.directory),
                "--daemonize", "no", "--logfile", str(self.directory / "redis.log")]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else ["--appendonly", "no"]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", str(self.directory / "nodes.conf")]
        args += self.options
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        self._wait_loaded()

    def _wait_loaded(self, timeout_s: float = 10.0) -> None:
        """Listening is not serving: while it reads its append-only file back, Redis answers
        LOADING to every command (a test that restarts it means the served state)."""
        deadline = time.monotonic() + scaled(timeout_s)
        while _answer(self.port, "PING") != "PONG" or not self._answering_itself():
            if self.process is not None and self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace").strip().splitlines()
                raise RuntimeError(f"redis-server on {self.port} exited: {log[-1] if log else '(no log)'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis on {self.port} still loading after {timeout_s}s")
            time.sleep(0.01)

    def _answering_itself(self) -> bool:
        """Whether the server on the port is this one (not another that took the port first)."""
        return self.process is None or self.info("server").get("process_id") == str(self.process.pid)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL: the host is gone, nothing flushed."""
        self.stop(signal.SIGKILL)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing is answered (a stalled host)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def info(self, section: str) -> dict[str, str]:
        return _info(self.port, section)

    def command(self, *args: str) -> str:
        return _command(self.port, *args)


class RedisClusterServers:
    """A Redis Cluster on loopback: ``primaries`` nodes, the 16,384 slots split evenly, each
    with ``replicas`` replicas, joined by hand (ADDSLOTSRANGE, MEET, REPLICATE: what
    ``redis-cli --cluster create`` does). A node that misses pings for ``node_timeout_ms``
    is failed over by its replica (short here, so a test's failover takes seconds)."""

    SLOTS = 16_384

    def __init__(self, directory: Path, primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1000) -> None:
        self.directory = directory
        self.node_timeout_ms = node_timeout_ms
        self.primaries: list[RedisServer] = []
        self.replicas: list[RedisServer] = []
        for n in range(primaries):
            self.primaries.append(self._node(f"primary{n}"))
        for n in range(primaries):
            for r in range(replicas):
                self.replicas.append(self._node(f"replica{n}-{r}"))

    def _node(self, name: str) -> RedisServer:
        return RedisServer(self.directory / name, self._free_port(), cluster=True, options=(
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-replica-validity-factor", "0",  # a replica always takes over a dead primary
            "--cluster-allow-replica-migration", "no"))

    @property
    def nodes(self) -> list[RedisServer]:
        return [*self.primaries, *self.replicas]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.primaries[0].port}/0"

    def _free_port(self) -> int:
        """A free port none of this cluster's nodes was given (they are taken as they start)."""
        given = {port for node in self.nodes for port in (node.port, node.port + 10_000)}
        while (port := free_cluster_port()) in given or port + 10_000 in given:
            pass
        return port

    def _start(self, node: RedisServer) -> None:
        """Start ``node``; on a port taken since it was chosen (a client's ephemeral port),
        on another."""
        for _ in range(5):
            try:
                node.start()
                return
            except RuntimeError as exc:
                if "Failed listening" not in str(exc):
                    raise
                node.port = self._free_port()
        raise RuntimeError("no free port for a cluster node in 5 tries")

    def start(self) -> None:
        for n, node in enumerate(self.primaries):
            self._start(node)
            first, last = n * self.SLOTS // len(self.primaries), (n + 1) * self.SLOTS // len(self.primaries) - 1
            node.command("CLUSTER", "ADDSLOTSRANGE", str(first), str(last))
        for node in self.nodes[1:]:
            if node in self.replicas:
                self._start(node)
            node.command("CLUSTER", "MEET", "127.0.0.1", str(self.primaries[0].port))
        per_primary = len(self.replicas) // len(self.primaries)
        for n, replica in enumerate(self.replicas):
            self.make_replica(replica, of=self.primaries[n // per_primary])
        self.wait(lambda: all("cluster_state:ok" in node.command("CLUSTER", "INFO") for node in self.nodes)
                  and all(r.info("replication").get("master_link_status") == "up" for r in self.replicas)
                  and all(p.info("replication").get("connected_slaves") == str(per_primary) for p in self.primaries),
                  "the cluster's nodes to agree and its replicas to sync")

    def make_replica(self, replica: RedisServer, of: RedisServer) -> None:
        """``replica`` (started, met) replicates ``of``, once it knows ``of``'s id."""
        primary_id = of.command("CLUSTER", "MYID")
        self.wait(lambda: primary_id in replica.command("CLUSTER", "NODES"), "the replica to learn its primary")
        replica.command("CLUSTER", "REPLICATE", primary_id)

    def add_replica(self, of: RedisServer) -> RedisServer:
        """A new node (a dead host's replacement) joined as ``of``'s replica, returned in sync."""
        replica = self._node(f"replica-added{len(self.replicas)}")
        self._start(replica)
        replica.command("CLUSTER", "MEET", "127.0.0.1", str(of.port))
        self.make_replica(replica, of)
        self.replicas.append(replica)
        self.wait(lambda: replica.info("replication").get("master_link_status") == "up", "the new replica in sync")
        return replica

    def migrate(self, slot: int, source: RedisServer, target: RedisServer, batch: int = 100) -> int:
        """Move ``slot`` from ``source`` to ``target`` as ``redis-cli --cluster reshard`` does
        it, keys ``batch`` at a time (meanwhile the slot answers ASK for keys moved and
        TRYAGAIN for commands whose keys are split); returns how many keys moved."""
        source_id, target_id = source.command("CLUSTER", "MYID"), target.command("CLUSTER", "MYID")
        target.command("CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
        source.command("CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
        moved = 0
        while names := source.command("CLUSTER", "GETKEYSINSLOT", str(slot), str(batch)).split():
            reply = source.command("MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS", *names)
            assert reply == "OK", reply
            moved += len(names)
        for node in (target, source, *(n for n in self.primaries if n not in (source, target) and n.process)):
            node.command("CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
        return moved

    def slot_count(self, node: RedisServer) -> int:
        """How many slots ``node`` serves, as it says itself."""
        mine = next(line for line in node.command("CLUSTER", "NODES").splitlines() if "myself" in line.split()[2])
        ranges = [part for part in mine.split()[8:] if not part.startswith("[")]
        return sum(int(last or first) - int(first) + 1 for first, _, last in (r.partition("-") for r in ranges))

    def living(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process is not None]

    def primary_of(self, slot: int) -> RedisServer | None:
        """The node every living node names as ``slot``'s primary (None while they disagree)."""
        owners = set()
        for node in self.living():
            for line in node.command("CLUSTER", "NODES").splitlines():
                fields = line.split()  # id, address@bus-port, flags, primary's id, ..., slots from the 9th on
                flags = fields[2].split(",")
                if "master" in flags and "fail" not in flags and _holds(fields[8:], slot):
                    owners.add(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
        return next((n for n in self.living() if owners == {n.port}), None)

    wait = staticmethod(wait_until)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                node.thaw()
            node.stop()


def _holds(ranges: list[str], slot: int) -> bool:
    """Whether CLUSTER NODES' slot list (``0-5460 7000 [8000->-id]``) holds ``slot``."""
    for part in ranges:
        if part.startswith("["):  # a slot being migrated or imported
            continue
        first, _, last = part.partition("-")
        if int(first) <= slot <= int(last or first):
            return True
    return False


def _command(port: int, *args: str) -> str:
    """One command through redis-cli (the tests' own view, independent of the bridge's client)."""
    result = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10,
                            check=True)
    return result.stdout.strip()


def _answer(port: int, *args: str) -> str:
    """Like `_command`, but an error reply (LOADING while it starts; redis-cli then exits 1)
    is returned as text instead of raised."""
    result = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10)
    return (result.stdout or result.stderr).strip()


def _info(port: int, section: str) -> dict[str, str]:
    lines = _command(port, "INFO", section).splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line and not line.startswith("#"))


class SentinelServer:
    """redis-server in Sentinel mode watching ``service`` (the primary on ``primary_port``).
    Sentinel rewrites its config file, so it gets a writable one of its own."""

    def __init__(self, directory: Path, port: int, primary_port: int, service: str, *, quorum: int = 2,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 4000, lines: tuple[str, ...] = ()) -> None:
        """``lines``: more lines of sentinel.conf, after the service's (TLS, users)."""
        self.directory = directory
        self.lines = lines
        self.port = port
        self.primary_port = primary_port
        self.service = service
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "sentinel.conf"
        config.write_text("\n".join([
            f"port {self.port}", "bind 127.0.0.1", "daemonize no", f"dir {self.directory}",
            f"logfile {self.directory / 'sentinel.log'}",
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary_port} {self.quorum}",
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
            f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {self.service} 1", *self.lines, ""]))
        self.process = subprocess.Popen([_binary(), str(config), "--sentinel"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def command(self, *args: str) -> str:
        return _command(self.port, *args)

    def master(self) -> dict[str, str]:
        """What this sentinel knows of the service (SENTINEL MASTER): ip, port, flags, num-slaves, ..."""
        values = _command(self.port, "SENTINEL", "MASTER", self.service).splitlines()
        return dict(zip(values[::2], values[1::2], strict=False))


class SentinelGroup:
    """A primary, one replica and three sentinels (quorum 2) on free ports, as a small
    production set-up has them; ``down_after_ms`` is short so a failover takes seconds."""

    def __init__(self, directory: Path, service: str = "bridge-primary") -> None:
        self.directory = directory
        self.service = service
        self.primary = RedisServer(directory / "primary", free_port())
        self.replicas = [RedisServer(directory / "replica-0", free_port(), replica_of=self.primary.port)]
        self.sentinels = [SentinelServer(directory / f"sentinel-{i}", free_port(), self.primary.port, service)
                          for i in range(3)]

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def start(self) -> None:
        self.primary.start()
        for replica in self.replicas:
            replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        # ready: the replica in sync, and every sentinel knowing the replica and the two others
        # (a failover needs the quorum to agree and a majority to elect a leader)
        self.wait(lambda: all(r.info("replication").get("master_link_status") == "up" for r in self.replicas),
                  "the replica in sync")
        self.wait(lambda: all(int(m.get("num-other-sentinels", 0)) == 2 and int(m.get("num-slaves", 0)) >= 1
                              for m in (s.master() for s in self.sentinels)), "the sentinels to know each other")

    def primary_port(self) -> int:
        """The primary's port as the sentinels name it (all agreeing)."""
        ports = {int(s.master()["port"]) for s in self.sentinels if s.process is not None}
        return ports.pop() if len(ports) == 1 else 0

    def server(self, port: int) -> RedisServer:
        return next(s for s in [self.primary, *self.replicas] if s.port == port)

    def add_replica(self, of_port: int) -> RedisServer:
        """A new replica of the server on ``of_port`` (a replacement for a dead host), returned
        once in sync. Until then its replica-priority is 0: Sentinel would promote a replica
        that has no data yet (its first sync waits repl-diskless-sync-delay, 5 s), and a
        second failover right after the first (a sentinel that missed the new primary's
        PONGs for down-after-milliseconds on a busy machine) then made an empty primary and
        the primary holding the data its replica, flushed."""
        replica = RedisServer(self.directory / f"replica-{len(self.replicas)}", free_port(), replica_of=of_port,
                              options=("--replica-priority", "0"))
        replica.start()
        self.replicas.append(replica)
        self.wait(lambda: replica.info("replication").get("master_link_status") == "up", "the new replica in sync")
        replica.command("CONFIG", "SET", "replica-priority", "100")
        return replica

    wait = staticmethod(wait_until)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in [self.primary, *self.replicas]:
            if server.process is not None:
                server.thaw()
            server.stop()
