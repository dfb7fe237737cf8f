"""`bridge run` as the README's first command leaves it: no config file, no Redis URL, no
external account. A support desk in the browser, with the support flows on, that a
terminal's Ctrl-C stops cleanly and that a crash leaves no orphaned Redis behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.harness import wait_for
from tests.servers import free_port
from tests.timing import scaled
from tests.widget_client import Tab

pytestmark = pytest.mark.slow


class Desk:
    """`python -m bridge run --port N` in a fresh directory, in a session of its own as a
    terminal would start it (Ctrl-C there signals the whole foreground process group)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = workdir / "terminal.txt"
        self.process: subprocess.Popen[bytes] | None = None
        self.since = 0  # where this run's output starts

    def start(self) -> None:
        self.since = len(self.output.read_text(errors="replace")) if self.output.exists() else 0
        env = {k: v for k, v in os.environ.items() if k not in ("BRIDGE_CONFIG", "REDIS_URL")}
        env["PYTHONPATH"] = str(Path(__file__).parent.parent)  # this checkout's code
        with self.output.open("ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "bridge", "run", "--port", str(self.port)],
                                            cwd=self.workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def text(self) -> str:
        return self.output.read_text(errors="replace")[self.since:]

    async def console_token(self) -> str:
        def printed() -> str | None:
            assert self.process is not None and self.process.poll() is None, self.text()
            found = re.findall(rf"agent console: http://localhost:{self.port}/agent#token=(\S+)", self.text())
            return found[-1] if found and "bridge running" in self.text().split(found[-1], 1)[1] else None

        token: str = await wait_for(printed, 30, "the console URL and 'bridge running' printed")
        return token

    def ctrl_c(self) -> int:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(scaled(30))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the desk did not stop on Ctrl-C; it printed:\n{self.text()[-3000:]}") from None

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    d = Desk(tmp_path)
    yield d
    if d.process is not None and d.process.poll() is None:
        d.kill()


def embedded_redis_alive(workdir: Path) -> bool:
    sock = str(workdir / "bridge-data" / "redis.sock")
    result = subprocess.run(["redis-cli", "-s", sock, "ping"], capture_output=True, text=True, timeout=10)
    return result.stdout.strip() == "PONG"


async def test_with_no_config_the_desk_answers_in_the_browser_and_stops_on_ctrl_c(desk: Desk) -> None:
    desk.start()
    token = await desk.console_token()
    assert f"bridge running: http://localhost:{desk.port}" in desk.text()
    async with aiohttp.ClientSession() as http:
        async with http.get(desk.url + "/") as page:
            assert page.status == 200
            assert '<script src="/widget.js"' in await page.text()

        tab = await Tab.connect(desk.url, hello={"language": "en"})
        try:
            visitor = (await tab.welcome())["visitor"]
            # a common question: the bot answers from the example FAQ, with a way to ask for a person
            await tab.say("q1", "How long does shipping take?")
            await wait_for(lambda: tab.texts("bot"), 20, "the FAQ answer")
            assert "ship within 1 business day" in tab.texts("bot")[0]
            # an urgent message in Russian: the instant reply comes in Russian
            await tab.say("q2", "Срочно! У нас остановилась производственная линия, контроллеры не запускаются")
            await wait_for(lambda: len(tab.texts("bot")) >= 2, 20, "the instant reply")
            assert re.search(r"[а-яА-Я]{4,}", tab.texts("bot")[-1]), tab.texts("bot")

            # the agent logs in with the printed link, finds the case and answers it
            async with http.post(desk.url + "/agent/login", json={"token": token}) as login:
                assert login.status == 200
                cookie = {"Cookie": f"bridge_agent={login.cookies['bridge_agent'].value}"}
            async with http.get(desk.url + "/agent/api/conversations?status=all", headers=cookie) as listed:
                (case,) = [c for c in (await listed.json())["conversations"] if c["address"] == visitor]
            assert case["urgency"] == "urgent" and case["language"] == "ru"
            async with http.post(f"{desk.url}/agent/api/conversations/{case['id']}/reply", headers={
                    "Origin": desk.url, **cookie}, json={"text": "Инженер уже звонит вам.", "client_id": "a1"}) as r:
                assert r.status == 200
            await wait_for(lambda: "Инженер уже звонит вам." in tab.texts("agent"), 20, "the agent's reply, live")
        finally:
            await tab.close()

    # Ctrl-C in the terminal: the bridge stops first, then its Redis; nothing complains
    assert desk.ctrl_c() == 0
    out = desk.text()
    assert out.rstrip().endswith("bridge stopped")
    assert out.index("embedded redis stopped") > out.index("bridge.runner")
    assert '"level": "warning"' not in out and '"level": "error"' not in out and "Traceback" not in out, out
    assert (desk.workdir / "bridge-data" / "appendonlydir").is_dir()
    assert not embedded_redis_alive(desk.workdir)


async def test_a_killed_desk_leaves_no_redis_behind_and_starts_again_with_its_data(desk: Desk) -> None:
    desk.start()
    await desk.console_token()
    tab = await Tab.connect(desk.url, hello={"language": "en"})
    try:
        welcome = await tab.welcome()
        await tab.say("k1", "Please send the datasheet for part LM317T.")
        await wait_for(lambda: tab.texts("bot"), 20, "the acknowledgement")
    finally:
        await tab.close()
    assert embedded_redis_alive(desk.workdir)

    desk.kill()  # SIGKILL: no shutdown code runs in the bridge
    await wait_for(lambda: not embedded_redis_alive(desk.workdir), 15, "the embedded Redis to end with the bridge")

    desk.start()
    await desk.console_token()
    again = await Tab.connect(desk.url, hello={"token": welcome["token"]})
    try:
        history = (await again.welcome())["history"]
        assert [i["text"] for i in history if i["from"] == "visitor"] == ["Please send the datasheet for part LM317T."]
    finally:
        await again.close()
    assert desk.ctrl_c() == 0
