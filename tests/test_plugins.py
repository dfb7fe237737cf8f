"""A separate package adds a channel and a step through entry points, without editing the
core: here a small package is installed into a directory on the path (a dist-info with
``entry_points.txt``, as pip writes it) and the whole bridge runs with it."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge import registry
from bridge.errors import ConfigError
from tests import harness
from tests.harness import running_bridge
from tests.test_api_e2e import AUTH, ENV, api_config
from tests.webhook import WebhookReceiver

PLUGIN = '''
from pathlib import Path

from bridge.adapter import Adapter, ChannelConfig, Delivered
from bridge.model import Message


class NotepadConfig(ChannelConfig):
    path: str


class NotepadAdapter(Adapter):
    """An agent-side channel that writes each escalation to a file."""

    config_model = NotepadConfig
    side = "agent"

    async def send(self, message: Message) -> Delivered:
        with Path(self.config.path).open("a") as notes:
            notes.write(f"{message.name}: {message.text}\\n")
        return Delivered(platform_id=message.id)


def build(config):
    def shout(turn):
        if turn.message.kind == "customer" and turn.message.text.endswith("!"):
            turn.reply("WE HEAR YOU: " + turn.message.text.upper())
            turn.stop()
    return shout
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site"
    (site / "bridge_notepad").mkdir(parents=True)
    (site / "bridge_notepad" / "__init__.py").write_text(PLUGIN)
    info = site / "bridge_notepad-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bridge-notepad\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [bridge.channels]
        notepad = bridge_notepad:NotepadAdapter
        api = bridge_notepad:NotepadAdapter

        [bridge.steps]
        shout = bridge_notepad:build
        """))
    monkeypatch.syspath_prepend(str(site))
    registry.channels.cache_clear()
    registry.steps.cache_clear()
    yield tmp_path
    registry.channels.cache_clear()
    registry.steps.cache_clear()


async def test_a_plugin_channel_and_step_run_in_the_bridge(plugin: Path, redis_url: str,
                                                           webhook: WebhookReceiver) -> None:
    notes = plugin / "notes.txt"
    config = api_config(webhook.url)
    config["channels"]["notepad"] = {"path": str(notes)}
    config["agents"] = {"channels": ["notepad"]}
    config["engine"] = {"steps": ["shout", "triage", "routing"]}
    assert registry.channels()["api"][1] == "adapters.api.adapter:ApiAdapter"  # a built-in name stays built-in
    async with running_bridge(redis_url, config, env=ENV) as b:
        await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": "c1", "text": "help me!"})
        await b.wait_for(lambda: webhook.texts_for("c1"), what="the plug-in step's reply")
        assert webhook.texts_for("c1") == ["WE HEAR YOU: HELP ME!"]
        await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": "c2", "text": "URGENT: line stopped"})
        await b.wait_for(lambda: notes.exists() and "escalation" in notes.read_text(),
                         what="the escalation written by the plug-in channel")


def test_a_plugin_channels_config_is_checked_by_its_own_model(plugin: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        harness.load_config(plugin, harness.test_config("redis://127.0.0.1:1/0", {"channels": {"notepad": {}}}), {})
    assert any(p.startswith("channels.notepad.path") for p in caught.value.problems), caught.value.problems
