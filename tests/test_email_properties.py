"""Property-based tests (hypothesis) over what a stranger controls in a mail: the MIME
structure, its HTML, its quotes, and the names and subjects we put back into headers.
Random and adversarial inputs never raise and stay inside the caps. (How the cost grows
with the input is measured in ``python -m bench.email_parse``, not here.)"""

from __future__ import annotations

import email
import email.policy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.email import compose
from adapters.email.html_text import html_to_text
from adapters.email.parse import MAX_PARTS, decode_bytes, parse, safe_filename
from adapters.email.quotes import strip_quotes

FAST = settings(max_examples=120, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

HTML_TOKENS = ["<div>", "</div>", "<p>", "</p>", "<b id=1>", "<font color=red>", "<a href='https://x.example/'>",
               "</a>", "<blockquote>", "</blockquote>", "<br>", "<br/>", "<", "</", "<a", "&#", "&#x", "&amp;", "&",
               "<!--", "-->", "<script>", "</script>", "<style>", "<pre>", "</pre>", "<table><tr><td>", "<li>",
               "<ul>", "<img alt='pic'>", "<?xml version='1.0' encoding='utf-8'?>", "<![CDATA[", "]]>", "\x00",
               "\n", " ", "\u00a0", "text", "é", "中文", "\ud800", ">", "'", '"', "=", "<html>", "<head><title>t",
               "<body>", "<hr>", "<h1>"]
QUOTE_LINES = ["> quoted", ">", "On Mon, 23 Nov 2026 at 09:10, Ann <a@x.example> wrote:", "On Mon, Ann", "wrote:",
               "-- ", "--", "Sent from my iPhone", "From: Ann", "Sent: Monday", "To: Support", "Subject: x",
               "-----Original Message-----", "==========", "__________", "", " ", "an answer",
               "在 2026年11月23日 写道：",
               "Иван пишет:", "пн, 23 нояб. 2026 г. в 09:10, Иван <i@x.example>:", "发件人: 张", "\t", "\r"]
CHARSETS = ["utf-8", "iso-8859-1", "gb2312", "koi8-r", "iso-2022-jp", "shift_jis", "utf-7", "utf-16", "x-unknown",
            "", "bogus charset", "cp932", "big5"]
HEADER_BITS = ["=?utf-8?q?Ann=0D=0ABcc:_victim@evil.example?=", "=?utf-8?b?QW5uDQpCY2M6IHZAZS5leGFtcGxl?=",
               "=?iso-2022-jp?b?GyRCJCIbKEI=?=", "=?x-unknown?q?a=0Ab?=", "\r\n", "\n", "\r", "Bcc: v@e.example",
               "=?", "?=", "\"", "<", ">", "@", ",", ";", "(", ")", "\x00", "\u2028", "\u0085", "Zoë", "李",
               "a" * 80, " "]


def _join(tokens: list[str]) -> str:
    return "".join(tokens)


html_soup = st.lists(st.sampled_from(HTML_TOKENS) | st.text(max_size=6), max_size=300).map(_join)
quoted_text = st.lists(st.sampled_from(QUOTE_LINES) | st.text(max_size=20), max_size=120).map("\n".join)
header_text = st.lists(st.sampled_from(HEADER_BITS) | st.text(max_size=10), max_size=12).map(_join)


@st.composite
def mime_part(draw: st.DrawFn, depth: int = 0) -> bytes:
    """One MIME entity: a leaf of any type, charset and encoding, or a multipart of such."""
    headers = []
    if depth < 3 and draw(st.booleans()):
        boundary = draw(st.sampled_from(["b1", "b2", "", "b\"x", "==="]))
        subtype = draw(st.sampled_from(["mixed", "alternative", "related", "report; report-type=delivery-status"]))
        children = draw(st.lists(mime_part(depth + 1), max_size=4))
        headers.append(f'Content-Type: multipart/{subtype}; boundary="{boundary}"'.encode())
        body = b"".join(b"--" + boundary.encode() + b"\r\n" + child + b"\r\n" for child in children)
        body += draw(st.sampled_from([b"--" + boundary.encode() + b"--\r\n", b"", b"--"]))
    else:
        ctype = draw(st.sampled_from(["text/plain", "text/html", "application/pdf", "image/png", "message/rfc822",
                                      "message/delivery-status", "text/rfc822-headers", "bogus", "multipart/mixed"]))
        charset = draw(st.sampled_from(CHARSETS))
        headers.append(f"Content-Type: {ctype}; charset={charset}".encode())
        encoding = draw(st.sampled_from(["", "base64", "quoted-printable", "8bit", "bogus"]))
        if encoding:
            headers.append(f"Content-Transfer-Encoding: {encoding}".encode())
        if draw(st.booleans()):
            name = draw(st.sampled_from(["../../etc/passwd", "=?utf-8?q?a=0D=0Ab.txt?=", "", "x" * 300, "a\\b.exe"]))
            headers.append(f'Content-Disposition: attachment; filename="{name}"'.encode())
        body = draw(st.binary(max_size=200) | html_soup.map(lambda s: s.encode("utf-8", "surrogatepass")))
    return b"\r\n".join(headers) + b"\r\n\r\n" + body


@st.composite
def raw_mail(draw: st.DrawFn) -> bytes:
    lines = [b"From: " + draw(header_text).encode("utf-8", "surrogatepass") + b" <ann@customer.example>",
             b"Subject: " + draw(header_text).encode("utf-8", "surrogatepass")]
    lines += draw(st.lists(st.sampled_from([b"Reply-To: x@y.example", b"Message-ID: <a@b>", b"Message-ID:",
                                            b"References: <a@b> <", b"stray line", b" folded", b"Date: 99 Foo",
                                            b"MIME-Version: 1.0", b"X-Failed-Recipients: , <>"]), max_size=5))
    return b"\r\n".join(lines) + b"\r\n" + draw(mime_part())


@FAST
@given(raw_mail())
def test_any_mail_parses_within_the_caps(raw: bytes) -> None:
    mail = parse(raw, max_text_chars=2_000)
    assert mail.message_id and len(mail.text) <= 2_000
    assert len(mail.attachments) <= MAX_PARTS
    for attachment in mail.attachments:
        assert attachment.name and not set(attachment.name) & set("/\\\r\n\x00")
    assert "\n" not in mail.subject and "\r" not in mail.from_name


@FAST
@given(st.binary(max_size=3_000))
def test_any_bytes_parse(raw: bytes) -> None:
    parse(raw)


@FAST
@given(html_soup, st.integers(min_value=1, max_value=500))
def test_any_html_becomes_text_within_the_cap(html: str, max_chars: int) -> None:
    text = html_to_text(html, max_chars=max_chars)
    assert len(text) <= max_chars and "<script" not in text


@FAST
@given(quoted_text)
def test_quote_stripping_never_raises_and_never_adds(text: str) -> None:
    stripped = strip_quotes(text)
    assert len(stripped) <= len(text)
    assert strip_quotes(text, max_chars=50) in text[:50] or len(strip_quotes(text, max_chars=50)) <= 50


@FAST
@given(st.binary(max_size=300), st.sampled_from(CHARSETS))
def test_any_bytes_decode_in_any_charset(data: bytes, charset: str) -> None:
    assert isinstance(decode_bytes(data, charset), str)


@FAST
@given(header_text, header_text, header_text)
def test_no_name_or_subject_adds_a_header(name: str, subject: str, agent: str) -> None:
    out = compose.Outgoing(from_addr="support@example.com", from_name=agent, to_addr="ann@customer.example",
                           to_name=name, subject=subject, text=name, reply_to="support+1@example.com",
                           extra_headers={"X-Bridge-Conversation": subject})
    sent = compose.build(out).as_bytes()
    received = email.message_from_bytes(sent, policy=email.policy.default)
    assert sorted(received.keys()) == sorted(["From", "To", "Reply-To", "Subject", "Date", "Message-ID",
                                              "X-Bridge-Conversation", "MIME-Version", "Content-Type"])
    assert received["Bcc"] is None and [a.addr_spec for a in received["To"].addresses] == ["ann@customer.example"]


@FAST
@given(st.text(max_size=200), st.sampled_from(["image/png", "text/plain", "application/x-unknown"]))
def test_any_file_name_is_safe(name: str, mime: str) -> None:
    safe = safe_filename(name, mime, "1")
    assert safe and not set(safe) & set("/\\\r\n\x00") and not safe.startswith(".")
