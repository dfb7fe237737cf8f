"""Property tests (hypothesis) over the two doors strangers knock on: the HTTP API and the
widget's WebSocket protocol. Whatever arrives, the answer is a 4xx or a clean close,
never a 500, a dropped connection (1006) or a dead server. Modest example counts: each
example is a real request to a real bridge."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import RunningBridge, running_bridge, wait_for
from tests.test_api_e2e import AUTH, api_config
from tests.test_api_e2e import ENV as API_ENV
from tests.test_widget_protocol import ENV, widget_config
from tests.webhook import WebhookReceiver
from tests.widget_client import Tab

EXAMPLES = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)


def nested(levels: int, opener: str = "[") -> str:
    """JSON nested ``levels`` deep: ``[[[...]]]`` or ``{"a":{"a":...1}}``."""
    if opener == "[":
        return "[" * levels + "]" * levels
    return '{"a":' * levels + "1" + "}" * levels


@pytest.fixture
async def desk(redis_url: str, webhook: WebhookReceiver) -> AsyncIterator[RunningBridge]:
    """One bridge with the API and the widget, shared by every example of a test."""
    limits = {"messages_per_minute": 100_000, "message_burst": 10_000, "ip_messages_per_minute": 100_000,
              "ip_message_burst": 10_000, "connections_per_ip": 1000, "new_visitors_per_ip_per_hour": 100_000}
    config = widget_config(limits=limits)
    config["channels"].update(api_config(webhook.url, max_message_bytes=65536)["channels"])
    async with running_bridge(redis_url, config, env={**ENV, **API_ENV}) as b:
        yield b


# -- the HTTP API ----------------------------------------------------------------------------

message_fields = st.fixed_dictionaries({}, optional={
    "customer_id": json_values, "text": json_values, "message_id": json_values, "name": json_values,
    "email": json_values, "language": json_values, "attachments": json_values, "extra": json_values})
api_bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    message_fields.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda n, o: nested(n, o).encode(), st.integers(1, 20_000), st.sampled_from(["[", "{"])),
)
api_paths = st.sampled_from(["/api/v1/messages", "/api/v1/conversations/{c}/messages",
                             "/api/v1/conversations/{c}/actions"])


@EXAMPLES
@given(body=api_bodies, path=api_paths, conversation=st.text(min_size=1, max_size=30),
       content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]))
async def test_no_api_input_makes_a_500(desk: RunningBridge, body: bytes, path: str, conversation: str,
                                        content_type: str) -> None:
    url = path.format(c=aiohttp.helpers.quote(conversation, safe="") or "x") if "{c}" in path else path
    headers = {**AUTH, **({"Content-Type": content_type} if content_type else {})}
    r = await desk.post(url, data=body, headers=headers)
    assert r.status in (202, 400, 404, 405, 413), (r.status, await r.text())
    if r.status != 202 and r.content_type == "application/json":
        assert (await r.json())["error"]


# -- the widget protocol -----------------------------------------------------------------------

frame_fields = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "profile", "ping", "hello", "nonsense"]) | json_values},
    optional={"cid": st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True) | json_values, "text": json_values,
              "files": json_values, "button": json_values, "name": json_values, "email": json_values})
frames = st.one_of(
    frame_fields.map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=200),
    st.builds(nested, st.integers(1, 8000), st.sampled_from(["[", "{"])),
    st.binary(max_size=40),
)
CLEAN_CLOSES = {1003, 1007, 1008, 1009}  # binary, not JSON / too deep, policy, too big


class Socket:
    """One visitor's tab, reopened when a frame closed it."""

    def __init__(self, desk: RunningBridge) -> None:
        self.desk = desk
        self.tab: Tab | None = None

    async def open(self) -> Tab:
        if self.tab is None or self.tab.close_code is not None:
            if self.tab is not None:
                await self.tab.close()
            self.tab = await Tab.connect(self.desk.url, hello={"language": "en"})
            await self.tab.welcome()
        return self.tab

    async def close(self) -> None:
        if self.tab is not None:
            await self.tab.close()


@pytest.fixture
async def socket(desk: RunningBridge) -> AsyncIterator[Socket]:
    s = Socket(desk)
    yield s
    await s.close()


@EXAMPLES
@given(frame=frames)
async def test_no_widget_frame_breaks_the_socket_or_the_server(socket: Socket, frame: str | bytes) -> None:
    tab = await socket.open()
    pongs = sum(f["type"] == "pong" for f in tab.frames)
    if isinstance(frame, bytes):
        await tab.ws.send_bytes(frame)
    else:
        await tab.ws.send_str(frame)
    if not tab.ws.closed:
        with contextlib.suppress(ConnectionError):
            await tab.ws.send_str('{"type":"ping"}')
    await wait_for(lambda: tab.close_code is not None or sum(f["type"] == "pong" for f in tab.frames) > pongs,
                   what="a pong or a clean close")
    assert tab.close_code is None or tab.close_code in CLEAN_CLOSES, (tab.close_code, frame[:200])
    for error in (f for f in tab.frames if f["type"] == "error"):
        assert isinstance(error.get("code"), str)
