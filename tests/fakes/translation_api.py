"""A fake translation service on 127.0.0.1 speaking three APIs at once, for the real client.

- LibreTranslate: ``POST /translate`` ``{q, source, target, format, api_key?}`` ->
  ``{translatedText, detectedLanguage: {language, confidence}}``;
- DeepL: ``POST /v2/translate`` with ``Authorization: DeepL-Auth-Key <key>``
  ``{text: [...], target_lang, source_lang?}`` -> ``{translations: [{detected_source_language, text}]}``
  (403 for a wrong key);
- OpenAI-compatible: ``POST /v1/chat/completions`` -> ``{choices: [{message: {content}}]}``,
  the target language read from the system prompt ("... into <Language>.").

Translations come from ``phrases`` ((text, target) -> translation), else ``[<target>] <text>``.
The source language is guessed from the script (Han: zh, Cyrillic: ru, else en). Failures
on demand: ``fake.fail("500" | "429" | "badjson" | "hang", times=n)``; a hung request
answers once ``fake.release()`` is called or the server stops. ``fake.requests`` records
(path, headers, body) of every call.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from aiohttp import web

NAMES = {"English": "en", "Chinese": "zh", "Russian": "ru", "Tagalog": "tl", "Malay": "ms", "Spanish": "es"}


def guess(text: str) -> str:
    if re.search(r"[\u4e00-\u9fff]", text):
        return "zh"
    if re.search(r"[\u0400-\u04ff]", text):
        return "ru"
    return "en"


class FakeTranslation:
    def __init__(self, phrases: dict[tuple[str, str], str] | None = None, *, deepl_key: str = "") -> None:
        self.phrases = dict(phrases or {})
        self.deepl_key = deepl_key
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.failures: list[str] = []
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, mode: str, times: int = 1) -> None:
        self.failures.extend([mode] * times)

    def release(self) -> None:
        self._released.set()

    def translate(self, text: str, target: str) -> str:
        return self.phrases.get((text, target), f"[{target}] {text}")

    async def __aenter__(self) -> FakeTranslation:
        app = web.Application()
        app.router.add_post("/translate", self._libre)
        app.router.add_post("/v2/translate", self._deepl)
        app.router.add_post("/v1/chat/completions", self._openai)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _failure(self) -> web.Response | None:
        """The next failure asked for, as a response (None: answer normally)."""
        if not self.failures:
            return None
        mode = self.failures.pop(0)
        if mode == "500":
            return web.json_response({"error": "internal"}, status=500)
        if mode == "429":
            return web.json_response({"error": "too many requests"}, status=429, headers={"Retry-After": "30"})
        if mode == "badjson":
            return web.Response(text="<html>not json", content_type="application/json")
        if mode == "hang":
            await self._released.wait()
            return web.json_response({"error": "late"}, status=503)
        raise ValueError(f"unknown failure mode {mode!r}")

    async def _record(self, request: web.Request) -> Any:
        body = json.loads(await request.read())
        self.requests.append((request.path, dict(request.headers), body))
        return body

    async def _libre(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        failure = await self._failure()
        if failure is not None:
            return failure
        source = body["source"] if body.get("source") not in (None, "auto") else guess(body["q"])
        return web.json_response({"translatedText": self.translate(body["q"], body["target"]),
                                  "detectedLanguage": {"language": source, "confidence": 90}})

    async def _deepl(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if request.headers.get("Authorization") != f"DeepL-Auth-Key {self.deepl_key}":
            return web.json_response({"message": "Wrong key"}, status=403)
        failure = await self._failure()
        if failure is not None:
            return failure
        target = str(body["target_lang"]).split("-")[0].lower()
        return web.json_response({"translations": [
            {"detected_source_language": str(body.get("source_lang") or guess(t)).upper(),
             "text": self.translate(t, target)} for t in body["text"]]})

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        failure = await self._failure()
        if failure is not None:
            return failure
        system, user = body["messages"][0]["content"], body["messages"][1]["content"]
        match = re.search(r"into (\w+)", system)
        target = NAMES.get(match.group(1), "en") if match else "en"
        return web.json_response({"choices": [{"index": 0, "message": {
            "role": "assistant", "content": self.translate(user, target)}, "finish_reason": "stop"}]})
