"""service.codecs.multipart: the in-memory parser takes plain forms and agrees with Starlette's on
every body it takes; everything else it leaves to Starlette (returns None)."""

from __future__ import annotations

import asyncio
import random
import re

import httpx
import pytest
from starlette.datastructures import UploadFile
from starlette.requests import Request

from service.codecs import multipart
from service.codecs.multipart import FormPart, boundary_of, parse_form_data

Parts = list[tuple[str, str | None, bytes | str]]  # files' bytes; fields' text, decoded as Starlette does


def starlette_parts(body: bytes, content_type: str) -> Parts | None:
    """What Starlette's form parser makes of ``body``: (name, filename or None, bytes); None if it refuses."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": [(b"content-type", content_type.encode("latin-1"))],
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def parse() -> Parts | None:
        try:
            form = await Request(scope, receive).form(max_files=10_000, max_fields=10_000)
        except Exception:  # any refusal counts
            return None
        parts: Parts = []
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                parts.append((name, value.filename, await value.read()))
            else:
                parts.append((name, None, value))
        await form.close()
        return parts

    return asyncio.run(parse())


def as_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def ours(body: bytes, content_type: str) -> Parts | None:
    parsed = parse_form_data(body, content_type)
    if parsed is None:
        return None
    return [(p.name, p.filename, p.data if p.filename is not None else as_text(p.data)) for p in parsed]


def httpx_form(
    files: list[tuple[str, tuple[str, bytes, str]]], data: dict[str, str] | None = None
) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return request.read(), request.headers["content-type"]


PNGISH = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3 + b"\r\n--not-the-boundary\r\n\r\n"


def test_an_httpx_form_of_files_and_fields_parses_as_starlette_does() -> None:
    body, content_type = httpx_form(
        [
            ("file", ("seven.png", PNGISH, "image/png")),
            ("file", ("zwei-ü.png", b"", "image/png")),
            ("other", ("x", b"\r\n\r\n", "application/octet-stream")),
        ],
        data={"note": "hello", "empty": ""},
    )
    expected = starlette_parts(body, content_type)
    assert expected is not None and ours(body, content_type) == expected
    assert [name for name, _, _ in expected] == ["note", "empty", "file", "file", "other"]


def test_the_parts_carry_their_headers() -> None:
    body, content_type = httpx_form([("file", ("seven.png", PNGISH, "image/png"))])
    (part,) = parse_form_data(body, content_type) or []
    assert part == FormPart("file", "seven.png", "image/png", 'form-data; name="file"; filename="seven.png"', PNGISH)


CURL = (
    b"--------------------------d74496d66958873e\r\n"
    b'Content-Disposition: form-data; name="file"; filename="seven.png"\r\n'
    b"Content-Type: image/png\r\n\r\n" + PNGISH + b"\r\n"
    b"--------------------------d74496d66958873e\r\n"
    b'Content-Disposition: form-data; name="file"; filename=""\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n\r\n"
    b"--------------------------d74496d66958873e\r\n"
    b"Content-Disposition: form-data; name=field\r\n\r\nvalue\r\n"
    b"--------------------------d74496d66958873e--\r\n"
)
CURL_TYPE = "multipart/form-data; boundary=------------------------d74496d66958873e"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (CURL, CURL_TYPE),
        (CURL, CURL_TYPE.replace("boundary=", 'boundary="') + '"'),  # quoted boundary
        (CURL, CURL_TYPE.replace("multipart/form-data", "Multipart/Form-Data") + "; charset=UTF-8"),
        (CURL + b"an epilogue, ignored", CURL_TYPE),
        (CURL.replace(b"Content-Disposition", b"content-disposition"), CURL_TYPE),
        (CURL.replace(b"; name=", b";name=  "), CURL_TYPE),
    ],
    ids=["curl", "quoted boundary", "charset and case", "epilogue", "header case", "spacing"],
)
def test_plain_forms_parse_as_starlette_does(body: bytes, content_type: str) -> None:
    expected = starlette_parts(body, content_type)
    assert expected is not None
    assert ours(body, content_type) == expected


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"a preamble\r\n" + CURL, CURL_TYPE),
        (CURL.replace(b"\r\n", b"\n"), CURL_TYPE),  # bare LF line ends
        (CURL.replace(b"Content-Type: image/png", b"Content-Type:\r\n image/png"), CURL_TYPE),  # folded header
        (CURL.replace(b"Content-Type: image/png", b"Content-Transfer-Encoding: base64"), CURL_TYPE),
        (CURL.replace(b'filename="seven.png"', b"filename*=UTF-8''seven.png"), CURL_TYPE),
        (CURL.replace(b'filename="seven.png"', b'filename="se\\"ven.png"'), CURL_TYPE),  # escaped quote
        (CURL.replace(b'name="file"; filename="seven.png"', b'filename="seven.png"'), CURL_TYPE),  # no name
        (CURL.replace(b'; filename="seven.png"', b'; filename="a"; filename="b"'), CURL_TYPE),  # repeated
        (CURL, CURL_TYPE + "; charset=latin-1"),
        (CURL, "multipart/form-data"),  # no boundary
        (CURL, "multipart/mixed; boundary=------------------------d74496d66958873e"),
        (CURL[:-4], CURL_TYPE),  # unterminated
        (
            CURL.replace(
                b"d74496d66958873e\r\nContent-Disposition: form-data; name=field",
                b"d74496d66958873e  \r\nContent-Disposition: form-data; name=field",
            ),
            CURL_TYPE,
        ),  # transport padding
        (CURL.replace(b"Content-Disposition: form-data; name=field\r\n\r\n", b"\r\n"), CURL_TYPE),  # no headers
        (b"", CURL_TYPE),
    ],
    ids=[
        "preamble",
        "bare LF",
        "folded header",
        "transfer encoding",
        "RFC 2231 filename",
        "escaped quote",
        "no name",
        "repeated parameter",
        "latin-1 charset",
        "no boundary",
        "not form-data",
        "unterminated",
        "transport padding",
        "part without headers",
        "empty",
    ],
)
def test_anything_unusual_is_left_to_starlette(body: bytes, content_type: str) -> None:
    assert parse_form_data(body, content_type) is None


def test_boundaries_are_read_from_the_content_type() -> None:
    assert boundary_of('multipart/form-data; boundary="a b"') is None  # legal, but left to Starlette
    assert boundary_of("multipart/form-data; boundary=abc") == b"abc"
    assert boundary_of("multipart/form-data; boundary=" + "x" * 71) is None


def test_any_body_this_parser_takes_starlette_parses_the_same() -> None:
    """Random damage to plain forms: whenever the fast parser still takes the body, Starlette must
    read the very same parts from it (the fast path may refuse more, never accept differently)."""
    rng = random.Random(1234)
    seeds = [(CURL, CURL_TYPE)]
    for n in (1, 3):
        seeds.append(httpx_form([("file", (f"{i}.png", PNGISH[: 10 + i], "image/png")) for i in range(n)], {"a": "b"}))
    alphabet = [b"\r\n", b"\r", b"\n", b"-", b"--", b'"', b";", b"=", b":", b" ", b"\x00", b"name", b"filename"]
    accepted = 0
    for trial in range(1500):
        body, content_type = seeds[trial % len(seeds)]
        damaged = bytearray(body)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(damaged))
            action = rng.random()
            if action < 0.4:
                damaged[at : at + rng.randint(1, 4)] = b""
            elif action < 0.8:
                damaged[at:at] = rng.choice(alphabet)
            else:
                damaged[at] = rng.randrange(256)
        damaged_body = bytes(damaged)
        mine = ours(damaged_body, content_type)
        if mine is not None:
            accepted += 1
            assert mine == starlette_parts(damaged_body, content_type), (trial, damaged_body)
    assert accepted > 300  # enough damaged-but-plain bodies were actually compared


def test_the_shortcut_for_common_headers_reads_what_the_general_path_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    forms = [(CURL, CURL_TYPE)]
    forms.append(httpx_form([("file", (f"{i}-ü.png", PNGISH[:i], "image/png")) for i in range(5)], {"a": "b"}))
    shortcut = [parse_form_data(body, content_type) for body, content_type in forms]
    monkeypatch.setattr(multipart, "_COMMON_HEADERS", re.compile(rb"(?!)"))  # never matches
    assert [parse_form_data(body, content_type) for body, content_type in forms] == shortcut
    assert all(parts is not None for parts in shortcut)


def test_a_form_of_too_many_parts_is_left_to_starlette_early() -> None:
    body, content_type = httpx_form([("file", (f"{i}.png", b"x", "image/png")) for i in range(20)])
    assert len(parse_form_data(body, content_type, max_parts=20) or []) == 20
    assert parse_form_data(body, content_type, max_parts=19) is None
