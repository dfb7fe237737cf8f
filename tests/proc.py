"""The bridge as a real process (`python -m bridge run`), for crash and restart tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.harness import test_config
from tests.servers import free_port
from tests.timing import scaled


class BridgeProcess:
    def __init__(self, workdir: Path, redis_url: str, config: dict[str, Any], *, env: dict[str, str] | None = None,
                 name: str = "bridge") -> None:
        self.port = free_port()
        self.config = test_config(redis_url, config)
        self.config["http"]["port"] = self.port
        self.path = workdir / f"{name}.yaml"
        self.path.write_text(yaml.safe_dump(self.config, allow_unicode=True))
        self.log_path = workdir / f"{name}.log"
        # this checkout's code, whichever checkout the virtualenv was installed from
        self.env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    async def start(self, failpoints: str = "", timeout_s: float = 20.0) -> None:
        """Start and wait until it answers; with ``failpoints`` it may reach one and kill
        itself before that (a fast machine): the caller's `wait_exit` sees it."""
        env = dict(self.env)
        env["BRIDGE_FAILPOINTS"] = failpoints
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "bridge", "run", "-c", str(self.path)],  # noqa: ASYNC220
                                        env=env, stdout=log, stderr=log, cwd=str(self.path.parent))
        deadline = asyncio.get_running_loop().time() + scaled(timeout_s)
        async with aiohttp.ClientSession() as http:
            while True:
                if self.process.poll() is not None:
                    if failpoints and self.process.returncode == -signal.SIGKILL:
                        return
                    raise RuntimeError(f"bridge exited with {self.process.returncode}:\n{self.log()}")
                try:
                    async with http.get(self.url + "/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"bridge did not come up:\n{self.log()}")
                await asyncio.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    async def wait_exit(self, timeout_s: float = 30.0) -> int:
        assert self.process is not None
        code = await asyncio.to_thread(self.process.wait, scaled(timeout_s))
        return code

    async def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return await self.wait_exit()
        except subprocess.TimeoutExpired:
            self.process.kill()
            return await self.wait_exit()
