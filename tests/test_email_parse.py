"""The tricky-mail corpus: every message parses, reads right, and loops are recognized."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest

from adapters.email.html_text import html_to_text
from adapters.email.loops import loop_reason
from adapters.email.parse import MAX_PARTS, attachment_bytes, decode_bytes, parse, safe_filename, synthetic_id
from adapters.email.quotes import strip_quotes

CORPUS = Path(__file__).parent / "fixtures" / "email"
OWN = ["support@example.com"]

# file -> (sender, words the stripped text contains, words it must not contain, loop reason prefix or "")
EXPECTED: dict[str, tuple[str, list[str], list[str], str]] = {
    "plain_utf8.eml": ("ann.lee@customer.example", ["order 1042", "Café ☕"], [], ""),
    "charset_gb2312.eml": ("zhang@customer.cn", ["我的订单还没有到"], [], ""),
    "charset_koi8r.eml": ("ivan@customer.ru", ["Мой заказ 77 не пришёл"], [], ""),
    "charset_unknown.eml": ("someone@customer.example", ["Order 5 broken", "\ufffd", "你好"], [], ""),
    "charset_mislabeled.eml": ("mueller@customer.de", ["Grüße", "beschädigt"], [], ""),
    "html_only.eml": ("html@customer.example", ["Hello team,", "broken & flickers", "- Model: X200",
                                                "here (https://example.com/p.jpg)"], ["<", "alert", "color: red"], ""),
    "alternative.eml": ("alt@customer.example", ["Plain version wins."], ["HTML version"], ""),
    "nested_multipart.eml": ("nested@customer.example", ["The invoice is attached"], ["<p>", "cid:"], ""),
    "attachment_noname.eml": ("files@customer.example", ["Three files."], ["root:x"], ""),
    "attachment_large.eml": ("big@customer.example", ["A big log file."], ["line of log"], ""),
    "bounce_dsn.eml": ("mailer-daemon@mx.customer.example", ["could not be delivered"], ["Thank you for your"],
                       "auto-submitted"),
    "bounce_exim.eml": ("mailer-daemon@mail.example.net", ["mail delivery software"], [], "bounce"),
    "auto_reply_ooo.eml": ("ann.lee@customer.example", ["out of the office"], [], "auto-submitted"),
    "auto_reply_outlook.eml": ("bob@corp.example", ["on leave"], [], "x-auto-response-suppress"),
    "mailing_list.eml": ("news@lists.example", ["This week"], [], "precedence: list"),
    "bulk.eml": ("promo@shop.example", ["Buy now."], [], "precedence: bulk"),
    "broken_headers.eml": ("broken@customer.example", ["Body without a boundary"], [], ""),
    "no_message_id.eml": ("noid@customer.example", ["Please call me back."], [], ""),
    "base64_broken.eml": ("b64@customer.example", ["Hello world"], [], ""),
    "gmail_reply_en.eml": ("ann.lee@customer.example", ["tracking number is AB123"], ["wrote:", "Thank you"], ""),
    "outlook_reply_en.eml": ("carl@corp.example", ["ship it to the new address", "Carl"],
                             ["From:", "Sent:", "Thank you"], ""),
    "reply_zh.eml": ("zhang@customer.cn", ["好的，谢谢你们的帮助。"], ["写道", "感谢您的来信"], ""),
    "outlook_reply_zh.eml": ("li@customer.cn", ["请重新开发票。"], ["发件人", "发票已发送"], ""),
    "qq_reply_zh.eml": ("12345@qq.com", ["收到，谢谢。"], ["原始邮件", "shipped"], ""),
    "reply_ru_gmail.eml": ("ivan@customer.ru", ["Спасибо, посылку получил."], ["Спасибо за сообщение", "Support"], ""),
    "outlook_reply_ru.eml": ("olga@customer.ru", ["Счёт оплачен.", "Ольга"],
                             ["Исходное", "Отправлено", "Ваш счёт"], ""),
    "signature_mobile.eml": ("dan@customer.example", ["production line stopped"], ["iPhone"], ""),
    "own_address.eml": ("support@example.com", ["New case"], [], "own-address"),
    "cc_reply.eml": ("colleague@customer.example", ["back door"], [], ""),
    # a line of "=" is not a quote: everything after it is the customer's
    "equals_line.eml": ("pat@customer.example", ["==========", "Unit 2: 5.02 V", "unit 3 does not start"], [], ""),
    # a header fold without its indent, a "---- Original email message ----" line on top: read anyway
    "broken_fold.eml": ("lee@customer.example", ["order 3307 arrived"], ["lost its indent"], ""),
    "original_message_line.eml": ("sam@customer.example", ["invoice for order 8812"], ["Original email"], ""),
    # "MAILER-DAEMON (Mail Delivery System)", no domain: still a bounce
    "bounce_bare_daemon.eml": ("mailer-daemon@mx.example.org", ["could not be delivered"], [], "bounce"),
    # out-of-office by subject only, in other languages
    "auto_reply_de_subject.eml": ("jonas@kunde.example", ["nicht im Büro"], [], "auto-reply (subject)"),
    "auto_reply_fr_subject.eml": ("claire@client.example", ["absente"], [], "auto-reply (subject)"),
    # "-- " signature above a mobile footer: both cut
    "signature_phone_footer.eml": ("dana@customer.example", ["return label for order 6610"],
                                   ["Dana Fox", "Purchasing", "+1 555", "iPhone"], ""),
    # ISO-2022-JP with NEC/IBM vendor characters (①, ㈱, 髙): no U+FFFD
    "iso2022jp_vendor.eml": ("takahashi@customer.jp", ["注文番号①の件です。髙橋様、㈱山田製作所"], ["\ufffd"], ""),
}


def test_the_corpus_is_complete() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_message_reads_right(name: str) -> None:
    sender, present, absent, loop = EXPECTED[name]
    mail = parse((CORPUS / name).read_bytes(), max_attachment_bytes=10_000)
    text = strip_quotes(mail.text)
    assert mail.message_id and "<" not in mail.message_id
    assert mail.from_addr == sender
    for word in present:
        assert word in text, f"{word!r} missing from {text!r}"
    for word in absent:
        assert word not in text, f"{word!r} should be stripped from {text!r}"
    assert loop_reason(mail, OWN).startswith(loop) if loop else loop_reason(mail, OWN) == ""
    assert mail.text.startswith(text[:20])  # the original keeps what was stripped from


def test_every_truncation_and_mutation_of_the_corpus_parses() -> None:
    """No input makes the parser raise: cut every message at many points, flip bytes."""
    for path in sorted(CORPUS.glob("*.eml")):
        raw = path.read_bytes()
        for cut in range(0, len(raw), max(1, len(raw) // 25)):
            parse(raw[:cut])
            mutated = bytearray(raw)
            mutated[cut] = (mutated[cut] + 0x80) % 256
            parse(bytes(mutated))
    parse(b"")
    parse(b"\x00\xff" * 100)


def test_headers_decode_in_any_charset() -> None:
    assert parse((CORPUS / "charset_gb2312.eml").read_bytes()).from_name == "张伟"
    assert parse((CORPUS / "charset_gb2312.eml").read_bytes()).subject == "订单查询"
    assert parse((CORPUS / "charset_koi8r.eml").read_bytes()).subject == "Заказ не пришёл"
    assert parse((CORPUS / "charset_unknown.eml").read_bytes()).subject == "Qapla’ order"  # unknown charset
    assert parse((CORPUS / "charset_mislabeled.eml").read_bytes()).from_name == "Müller"  # raw 8-bit header


def test_attachments_are_metadata_with_safe_names_and_a_size_cap() -> None:
    files = parse((CORPUS / "attachment_noname.eml").read_bytes()).attachments
    assert [(a.name, a.mime, a.size) for a in files] == [
        ("attachment-2.bin", "application/octet-stream", 3),  # no name: one is made up
        ("passwd", "text/plain", 10),  # "../../etc/passwd": no directories
        ("照片 .jpg", "image/jpeg", 40),  # RFC 2231 UTF-8 name; CR/LF removed
    ]
    (big,) = parse((CORPUS / "attachment_large.eml").read_bytes(), max_attachment_bytes=10_000).attachments
    assert big.name == "log.txt" and big.size == 24_000 and big.too_large
    nested = parse((CORPUS / "nested_multipart.eml").read_bytes()).attachments
    assert [(a.name, a.part, a.inline) for a in nested] == [("logo.png", "1.2", True), ("invoice.pdf", "2", False)]


def test_safe_filename() -> None:
    assert safe_filename("..\\..\\windows\\system32\\evil.exe", "application/x-msdownload", "3") == "evil.exe"
    assert safe_filename("...", "image/png", "2") == "attachment-2.png"
    assert safe_filename("a\x00b\r\nc/../d.txt", "text/plain", "1") == "d.txt"
    assert safe_filename("a\x00b\r\nc.txt", "text/plain", "1") == "ab c.txt"
    assert safe_filename("x<y>|z?.txt", "text/plain", "1") == "x_y__z_.txt"


def test_real_world_headers_and_charsets() -> None:
    broken = parse((CORPUS / "broken_fold.eml").read_bytes())
    assert broken.subject == "The fold of this header lost its indent" and broken.to == ["support@example.com"]
    assert parse((CORPUS / "original_message_line.eml").read_bytes()).subject == "Forwarded from my old mailbox"
    bounce = parse((CORPUS / "bounce_bare_daemon.eml").read_bytes())
    assert [f.recipient for f in bounce.failures] == ["nobody@example.org"]
    assert parse((CORPUS / "iso2022jp_vendor.eml").read_bytes()).subject == "納期①について"
    assert decode_bytes("①㈱髙".encode("cp932"), "Shift_JIS") == "①㈱髙"  # Windows' Shift_JIS is CP932


def test_two_hundred_attachments_are_all_listed_and_a_cap_is_said() -> None:
    mail = EmailMessage()
    mail["From"], mail["Subject"] = "ann@customer.example", "photos"
    mail.set_content("All photos of the batch.")
    for i in range(200):
        mail.add_attachment(b"x", maintype="image", subtype="jpeg", filename=f"photo-{i:03}.jpg")
    parsed = parse(mail.as_bytes())
    assert [a.name for a in parsed.attachments] == [f"photo-{i:03}.jpg" for i in range(200)]
    assert parsed.parts_not_read == 0 and parsed.text == "All photos of the batch."
    for i in range(200, MAX_PARTS + 5):
        mail.add_attachment(b"x", maintype="image", subtype="jpeg", filename=f"photo-{i:03}.jpg")
    capped = parse(mail.as_bytes())
    assert len(capped.attachments) == MAX_PARTS - 1 and capped.parts_not_read == 6  # the text is a part too
    assert any("6 parts not read" in d for d in capped.defects)


@pytest.mark.parametrize("subject", [
    "Automatische Antwort: Bestellung 1042", "Abwesenheitsnotiz", "Réponse automatique : commande",
    "Absence du bureau", "Respuesta automática: pedido", "Fuera de la oficina", "Risposta automatica: ordine",
    "Fuori sede", "Resposta automática: pedido", "Ausência temporária", "Automatisch antwoord: bestelling",
    "Afwezig", "Automatyczna odpowiedź: zamówienie", "Automatiskt svar: order", "Autosvar: ordre",
    "Automaattinen vastaus: tilaus", "Otomatik yanıt: sipariş", "自動返信: ご注文", "Balasan automatik: pesanan",
])
def test_out_of_office_subjects_in_many_languages_are_not_answered(subject: str) -> None:
    raw = f"From: a@customer.example\r\nSubject: {subject}\r\nMessage-ID: <o@c>\r\n\r\naway".encode()
    assert loop_reason(parse(raw), OWN) == "auto-reply (subject)"


@pytest.mark.parametrize("subject", ["Afwezig tot maandag: is de bestelling onderweg?", "Ausente el cargador",
                                     "Absence of the power supply", "Automation question"])
def test_a_subject_that_only_starts_like_one_is_answered(subject: str) -> None:
    raw = f"From: a@customer.example\r\nSubject: {subject}\r\nMessage-ID: <o@c>\r\n\r\nhello".encode()
    assert loop_reason(parse(raw), OWN) == ""


def test_the_id_of_mail_without_message_id_survives_trace_headers() -> None:
    """A rebuilt mailbox (new UIDVALIDITY) may hand back the mail with other trace headers."""
    raw = (CORPUS / "no_message_id.eml").read_bytes()
    retraced = b"Received: from relay2.example by mx.example; Tue, 24 Nov 2026 10:00:00 +0000\r\n" + raw
    assert parse(retraced).message_id == parse(raw).message_id == synthetic_id(raw)
    assert parse(raw.replace(b"Please call me", b"Please mail me")).message_id != parse(raw).message_id


def test_a_bounce_names_the_message_it_returns() -> None:
    mail = parse((CORPUS / "bounce_dsn.eml").read_bytes())
    assert mail.report_type == "delivery-status"
    assert mail.original_ids == ["ack-1@example.com"]
    assert "Thank you for your message" not in mail.text  # the returned mail is not the bounce's text
    (failure,) = mail.failures
    assert (failure.recipient, failure.status, failure.permanent) == ("nobody@customer.example", "5.1.1", True)
    (exim,) = parse((CORPUS / "bounce_exim.eml").read_bytes()).failures
    assert exim.recipient == "gone@example.net" and exim.permanent
    assert parse((CORPUS / "auto_reply_ooo.eml").read_bytes()).failures == []


def test_mail_without_message_id_gets_a_stable_one() -> None:
    raw = (CORPUS / "no_message_id.eml").read_bytes()
    assert parse(raw).message_id == parse(raw).message_id
    assert parse(raw).message_id != parse(raw + b"x").message_id


def test_html_to_text() -> None:
    assert html_to_text("<p>a&lt;b</p><p>c</p>") == "a<b\n\nc"
    assert html_to_text('<ul><li>one</li><li><a href="https://x.example/p">two</a></li></ul>') == \
        "- one\n- two (https://x.example/p)"
    assert html_to_text("a<!-- hidden -->b<script>alert(1)</script><style>p{}</style>c") == "abc"
    assert html_to_text("<!-- only a comment -->") == "" and html_to_text("") == ""
    assert html_to_text('<?xml version="1.0" encoding="utf-8"?><p>caf\u00e9</p>') == "caf\u00e9"
    assert html_to_text("<p>" + "word " * 50_000 + "</p>", max_chars=1_000) == ("word " * 200).strip()
    assert html_to_text("x<blockquote>quoted<br>two</blockquote>y") == "x\n\n> quoted\n> two\n\ny"
    assert html_to_text("<table><tr><td>1</td><td>2</td></tr><tr><td>3</td></tr></table>") == "12\n3"


@pytest.mark.parametrize(("text", "expected"), [
    ("Thanks!\n\nOn Mon, Nov 23, 2026 at 9:12 AM Support <support@example.com>\nwrote:\n> old", "Thanks!"),
    ("Short answer\nOn 23/11/2026 09:12, Support wrote:\n> old", "Short answer"),
    ("See inline.\n\nOn Mon, Ann wrote:\n> q1\nanswer one\n> q2\nanswer two", "See inline.\n\nanswer one\nanswer two"),
    ("Hi\n\n-----Original Message-----\nFrom: a\nSent: b\nTo: c\nSubject: d\n\nold", "Hi"),
    ("I wrote: the printer is broken", "I wrote: the printer is broken"),
    ("> only a quote, nothing new", "> only a quote, nothing new"),
    ("Order 5\n\n--\nAnn Lee\nACME Ltd", "Order 5"),
    ("Order 5\n\nОтправлено с iPhone", "Order 5"),
    ("订单5\n\n发自我的iPhone", "订单5"),
    ("Call me -- today, please", "Call me -- today, please"),
    ("Order 5\n\n-- \nAnn Lee\n+1 555 0100\n\nSent from my iPhone", "Order 5"),
    ("Readings:\n==========\n4.98 V\n==========\nUnit 3 is dead", "Readings:\n==========\n4.98 V\n==========\n"
     "Unit 3 is dead"),
    ("\n" * 40_000 + "hello" + "\n" * 40_000, "hello"),
    ("Danke!\n\nAm Mo., 23. Nov. 2026 um 09:12 Uhr schrieb Support <s@x.com>:\n> alt", "Danke!"),
    ("Terima kasih\n\nPada Isn, 23 Nov 2026 pada 9:12 PG Support <s@x.com> menulis:\n> lama", "Terima kasih"),
    ("Salamat po\n\nNoong Lun, Nob 23, 2026 nang 9:12 AM, isinulat ni Support <s@x.com>:\n> luma", "Salamat po"),
])
def test_strip_quotes(text: str, expected: str) -> None:
    assert strip_quotes(text) == expected


def test_an_attachment_is_found_again_by_the_part_parse_gave_it() -> None:
    inner = EmailMessage()
    inner["Subject"] = "the original order"
    inner.set_content("order 5521")
    outer = EmailMessage()
    outer["From"], outer["Subject"] = "ann@customer.example", "fwd"
    outer.set_content("see below")
    outer.add_alternative("<p>see below</p>", subtype="html")
    outer.add_attachment(b"%PDF-1.4 invoice", maintype="application", subtype="pdf", filename="invoice.pdf")
    outer.add_attachment(inner)
    raw = outer.as_bytes()
    found = {a.name: attachment_bytes(raw, a.part) for a in parse(raw).attachments}
    assert found["invoice.pdf"] == b"%PDF-1.4 invoice"
    forwarded = [v for k, v in found.items() if k != "invoice.pdf"]
    assert len(forwarded) == 1 and b"order 5521" in (forwarded[0] or b"")
    assert attachment_bytes(raw, "9") is None and attachment_bytes(raw, "x.1") is None

    single = EmailMessage()
    single["Content-Type"] = "application/octet-stream"
    single.set_payload(b"raw firmware dump")  # a mail that is one file
    (whole,) = parse(single.as_bytes()).attachments
    assert attachment_bytes(single.as_bytes(), whole.part) == b"raw firmware dump"
