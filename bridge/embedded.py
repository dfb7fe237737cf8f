"""An embedded redis-server for the default set-up: no Redis URL configured means the
bridge runs its own, private (Unix socket only, no TCP port), with append-only
persistence in the data directory, and stops it on exit.

The data directory is the bridge's alone: created 0700, and Redis writes its files 0600
(it runs with umask 077). Memory is capped (``redis.max_memory_mb``) with the
``noeviction`` policy: the bridge's data is a queue and a record, and evicting keys would
lose messages silently, so a full Redis refuses writes instead (publishers answer
"retry later", uploads "storage full") and ``bridge status`` shows it.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import redis.asyncio as aioredis

from bridge.connection import close
from bridge.errors import BridgeError

log = logging.getLogger("bridge.embedded")

HOW_TO_GET = (
    "no Redis URL is configured (redis.url / REDIS_URL), so the bridge wants to run an embedded "
    "redis-server, but none was found. Install one (Debian/Ubuntu: sudo apt-get install redis-server; "
    "Fedora: sudo dnf install redis; macOS: brew install redis), point redis.server_binary at it, "
    "or set redis.url to an existing Redis 7."
)


def find_binary(configured: str | None = None) -> str:
    if configured:
        if Path(configured).is_file():
            return configured
        raise BridgeError(f"redis.server_binary: {configured} does not exist")
    found = shutil.which("redis-server")
    if found is None:
        raise BridgeError(HOW_TO_GET)
    return found


def socket_path(data_dir: Path) -> Path:
    return data_dir.resolve() / "redis.sock"


def socket_url(data_dir: Path) -> str:
    return f"unix://{socket_path(data_dir)}"


class EmbeddedRedis:
    def __init__(self, data_dir: Path, binary: str | None = None, max_memory_mb: int = 0) -> None:
        self.data_dir = data_dir.resolve()
        self.binary = binary
        self.max_memory_mb = max_memory_mb
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return socket_url(self.data_dir)

    async def start(self, timeout_s: float = 10.0) -> str:
        binary = find_binary(self.binary)
        private_dir(self.data_dir)
        sock = socket_path(self.data_dir)
        if len(str(sock)) > 100:
            raise BridgeError(f"redis.data_dir: the path {self.data_dir} is too long for a Unix socket; "
                              "choose a shorter data directory")
        if sock.exists():
            if await _answers(self.url):
                raise BridgeError(f"redis.data_dir: another bridge is already running on {self.data_dir} "
                                  "(its embedded Redis answers); stop it or use another data_dir")
            sock.unlink()
        args = [binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--daemonize", "no", "--logfile", str(self.data_dir / "redis.log"),
                "--maxmemory", f"{self.max_memory_mb}mb", "--maxmemory-policy", "noeviction"]
        # its own session: a Ctrl-C in the terminal (SIGINT to the whole foreground group) reaches
        # only the bridge, which stops Redis last, after its own shutdown has used it
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,  # noqa: ASYNC220
                                        start_new_session=True, preexec_fn=_end_with_parent)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            if self.process.poll() is not None:
                err = (self.process.stderr.read() if self.process.stderr else b"").decode(errors="replace")
                raise BridgeError(f"the embedded redis-server exited at start: {err.strip() or 'see'} "
                                  f"{self.data_dir / 'redis.log'}")
            if sock.exists() and await _answers(self.url):
                log.info("embedded redis started", extra={"data_dir": str(self.data_dir), "binary": binary})
                return self.url
            await asyncio.sleep(0.02)
        await self.stop()
        raise BridgeError(f"the embedded redis-server did not answer within {timeout_s}s; see "
                          f"{self.data_dir / 'redis.log'}")

    async def stop(self) -> None:
        """SIGTERM: Redis flushes the append-only file and exits."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            await asyncio.to_thread(self.process.wait, 15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)
        self.process = None
        log.info("embedded redis stopped")


def private_dir(path: Path) -> Path:
    """``path`` created if needed and made 0700 (a directory from an older version may be
    world-readable)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        try:
            path.chmod(0o700)
        except PermissionError:
            raise BridgeError(f"redis.data_dir: {path} is readable by others and not ours to change; "
                              f"run: chmod 700 {path}") from None
    return path


def local_secret(directory: Path, name: str, initial: str | None = None) -> str:
    """A secret kept in a 0600 file of the private data directory, never in Redis:
    ``initial`` (a value an older version kept in Redis) or a new random one the first
    time, the same one afterwards."""
    file = private_dir(directory) / name
    try:
        return file.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    value = initial or secrets.token_urlsafe(32)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(value + "\n")
    return value


def _end_with_parent() -> None:
    """In the child before exec: on Linux, get SIGTERM when the bridge dies, even by SIGKILL,
    so a crashed bridge leaves no orphaned Redis holding the data directory; and a umask
    that keeps every file Redis writes private."""
    os.umask(0o077)
    if sys.platform != "linux":
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


async def _answers(url: str) -> bool:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await close(client)
