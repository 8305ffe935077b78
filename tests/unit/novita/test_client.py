"""The Novita client against responses and a loopback server: the streamed body, one attempt per call, errors, the key."""

from __future__ import annotations

import base64
import io
import json
import threading
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO, cast

import boto3
import pytest
import requests
import responses
from aws_lambda_powertools.utilities import parameters
from hypothesis import given, settings
from hypothesis import strategies as st
from img2video.aws import secrets
from img2video.aws.secrets import novita_client
from img2video.core.errors import InsufficientBalance, PipelineError, ProviderAuth, ProviderRejected, ProviderThrottled, ProviderUnavailable
from img2video.novita import client as novita
from img2video.novita import errors as novita_errors
from img2video.novita import request_body
from img2video.novita.client import CONNECT_TIMEOUT, RESULT_READ_TIMEOUT, SUBMIT_READ_TIMEOUT, NovitaClient, worst_case_seconds
from img2video.novita.errors import classify_http_error, parse_retry_after
from img2video.novita.request_body import InlineImage, InlineImageSizeMismatch, json_body
from moto import mock_aws

from tests.conftest import API_KEY, NOVITA

SUBMIT_URL = f"{NOVITA}/v3/async/vidu-q2-turbo-img2video"
RESULT_URL = f"{NOVITA}/v3/async/task-result"
NEW_KEY = "sk-test-ROTATED-0a1b2c3d4e5f"


class Opened:
    """An InlineImage source over bytes that counts how often it was opened (each retry re-reads the image)."""

    def __init__(self, data: bytes, cut: int | None = None) -> None:
        self.data, self.cut, self.count = data, cut, 0

    def __call__(self) -> BinaryIO:
        self.count += 1
        return io.BytesIO(self.data[: self.cut])


def inline(data: bytes, mime: str = "image/jpeg", cut: int | None = None) -> tuple[InlineImage, Opened]:
    source = Opened(data, cut)
    return InlineImage(mime=mime, size=len(data), open=source), source


def data_uri(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_of(uri: str) -> bytes:
    return base64.b64decode(uri.split(",", 1)[1], validate=True)


@pytest.fixture(autouse=True)
def _no_sleeping(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client never sleeps: waiting is the state machine's job, not a Lambda's billed time."""

    def refuse(seconds: float) -> None:
        raise AssertionError(f"the client slept {seconds} s")

    monkeypatch.setattr("time.sleep", refuse)


@pytest.fixture
def client() -> NovitaClient:
    return NovitaClient(NOVITA, API_KEY, session=requests.Session())


# -- the streamed body ---------------------------------------------------------------------------------
def test_streamed_body_is_exactly_json_dumps_with_the_data_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(request_body, "RAW_CHUNK_BYTES", 3 * 1000)  # many chunks, and a short last one
    image = bytes(range(256)) * 100 + b"\x01"
    entry, _ = inline(image, "image/png")
    body = {"images": [entry, "https://example.test/b.jpg"], "prompt": 'ein "Kätzchen" \u2028 gähnt', "duration": 5, "off_peak": True}

    streamed = json_body(body)
    sent = b"".join(iter(lambda: streamed.read(16384), b""))

    expected = json.dumps({**body, "images": [data_uri(image, "image/png"), "https://example.test/b.jpg"]}).encode()
    assert sent == expected and len(streamed) == len(expected)
    assert image_of(json.loads(sent)["images"][0]) == image


@settings(max_examples=60, deadline=None)
@given(
    images=st.lists(st.binary(max_size=40), min_size=1, max_size=3),
    prompt=st.text(max_size=40),
    chunk=st.sampled_from([3, 6, 30]),
    read_size=st.integers(min_value=1, max_value=50),
)
def test_any_images_and_prompt_stream_to_the_same_bytes(images: list[bytes], prompt: str, chunk: int, read_size: int) -> None:
    original = request_body.RAW_CHUNK_BYTES
    request_body.RAW_CHUNK_BYTES = chunk  # hypothesis runs examples itself, outside monkeypatch's reach
    try:
        body = {"images": [inline(data)[0] for data in images], "prompt": prompt}
        streamed = json_body(body)
        sent = b"".join(iter(lambda: streamed.read(read_size), b""))
    finally:
        request_body.RAW_CHUNK_BYTES = original
    assert sent == json.dumps({"images": [data_uri(data) for data in images], "prompt": prompt}).encode()
    assert len(streamed) == len(sent)


def test_body_rewinds_to_its_start_and_reopens_the_image() -> None:
    entry, source = inline(b"\xff\xd8\xff" + bytes(5000) + b"\xff\xd9")
    streamed = json_body({"images": [entry], "prompt": "p"})
    first = streamed.read(100)
    assert streamed.tell() == 100
    assert streamed.seek(0) == 0 and streamed.tell() == 0
    whole = streamed.read()
    assert whole.startswith(first) and len(whole) == len(streamed) and source.count == 2
    with pytest.raises(io.UnsupportedOperation):
        streamed.seek(10)


def test_a_short_image_stream_is_a_clear_error_not_a_short_body() -> None:
    entry, _ = inline(bytes(1000), cut=600)
    with pytest.raises(InlineImageSizeMismatch, match="ended after 600 bytes, but the image was announced as 1000 bytes"):
        json_body({"images": [entry]}).read()


def test_a_long_image_stream_is_a_clear_error_too() -> None:
    entry = InlineImage(mime="image/png", size=10, open=lambda: io.BytesIO(bytes(11)))
    with pytest.raises(InlineImageSizeMismatch, match="more than the 10 bytes announced"):
        json_body({"images": [entry]}).read()


@responses.activate
def test_a_short_image_stream_fails_the_submit(client: NovitaClient) -> None:
    responses.post(SUBMIT_URL, json={"task_id": "t"})
    entry, _ = inline(bytes(1000), cut=10)
    with pytest.raises(InlineImageSizeMismatch):
        client.submit({"images": [entry], "prompt": "p"})


@responses.activate
def test_submit_streams_inline_images_with_a_content_length(client: NovitaClient) -> None:
    responses.post(SUBMIT_URL, json={"task_id": "task-9"})
    image = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 5000
    entry, _ = inline(image, "image/png")

    assert client.submit({"images": [entry], "prompt": "p", "duration": 5}) == "task-9"

    [call] = responses.calls
    sent = call.request.body
    assert isinstance(sent, bytes)
    assert call.request.headers["Content-Length"] == str(len(sent)) and "Transfer-Encoding" not in call.request.headers
    assert call.request.headers["Content-Type"] == "application/json"
    assert json.loads(sent) == {"images": [data_uri(image, "image/png")], "prompt": "p", "duration": 5}


@responses.activate
def test_plain_url_bodies_still_work(client: NovitaClient) -> None:
    responses.post(SUBMIT_URL, json={"task_id": "t"})
    body = {"images": ["https://bucket.test/cat.jpg?X-Amz-Signature=abc"], "prompt": "a cat", "resolution": "1080p"}
    assert client.submit(body) == "t"
    assert responses.calls[0].request.body == json.dumps(body).encode()


class _Recorder(BaseHTTPRequestHandler):
    """Reads the body as a real server would, in small pieces, and keeps a copy only when asked to."""

    keep = True
    seen: list[tuple[dict[str, str], bytes]] = []  # noqa: RUF012 (one list per test, reset by the fixture)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        kept, left = bytearray(), length
        while left:
            piece = self.rfile.read(min(left, 65536))
            if not piece:
                break
            left -= len(piece)
            if self.keep:
                kept += piece
        type(self).seen.append((dict(self.headers), bytes(kept)))
        answer = b'{"task_id": "t-loop"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def loopback() -> Iterator[str]:
    _Recorder.seen, _Recorder.keep = [], True
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_real_socket_gets_a_content_length_and_the_exact_bytes(loopback: str) -> None:
    image = bytes(range(256)) * 12_000 + b"\xff"  # about 3 MB: several 768 KiB chunks
    entry, _ = inline(image)
    assert NovitaClient(loopback, API_KEY, session=requests.Session()).submit({"images": [entry], "prompt": "p"}) == "t-loop"
    [(headers, sent)] = _Recorder.seen
    assert int(headers["Content-Length"]) == len(sent) and "Transfer-Encoding" not in headers
    assert image_of(json.loads(sent)["images"][0]) == image


def test_memory_stays_flat_whatever_the_image_size(loopback: str) -> None:
    _Recorder.keep = False
    image = bytes(24 * 1024 * 1024)
    entry = InlineImage(mime="image/jpeg", size=len(image), open=lambda: io.BytesIO(image))
    client = NovitaClient(loopback, API_KEY, session=requests.Session())
    tracemalloc.start()
    try:
        client.submit({"images": [entry], "prompt": "p"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the old way held the 32 MiB base64 text and the 32 MiB body at once; now a chunk or two
    assert peak < 6 * 1024 * 1024, peak


# -- one attempt per call ----------------------------------------------------------------------------------
FAILURES: dict[str, dict[str, Any]] = {
    "503": {"status": 503, "json": {"code": 503, "reason": "SERVICE_UNAVAILABLE", "message": "busy"}},
    "429": {"status": 429, "json": {"code": 429, "reason": "RATE_LIMIT_EXCEEDED", "message": "slow down"}, "headers": {"Retry-After": "3"}},
    "connection error": {"body": requests.exceptions.ConnectionError("connection refused")},
    "read timeout": {"body": requests.exceptions.ReadTimeout("timed out")},
}


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("failure", list(FAILURES))
@responses.activate
def test_a_failure_is_one_http_call_never_retried_in_the_client(method: str, failure: str) -> None:
    url = SUBMIT_URL if method == "POST" else RESULT_URL
    responses.add(method, url, **FAILURES[failure])
    client = NovitaClient(NOVITA, API_KEY)  # the shared session, as the Lambdas use it
    with pytest.raises((ProviderUnavailable, ProviderThrottled)) as caught:
        if method == "POST":
            client.submit({"images": ["https://bucket.test/a.jpg"], "prompt": "p"})
        else:
            client.task_result("task-1")
    assert len(responses.calls) == 1
    assert caught.value.transient


def _sent_with(call: Any) -> dict[str, Any]:
    """The keyword arguments requests gave the adapter (responses keeps them on the request)."""
    return dict(call.request.req_kwargs)


@responses.activate
def test_each_call_uses_its_own_bounded_timeouts(client: NovitaClient) -> None:
    responses.post(SUBMIT_URL, json={"task_id": "t"})
    responses.get(RESULT_URL, json={"task": {"task_id": "t", "status": "TASK_STATUS_QUEUED"}})
    client.submit({"images": ["https://bucket.test/a.jpg"], "prompt": "p"})
    client.task_result("t")
    assert [_sent_with(call)["timeout"] for call in responses.calls] == [
        (CONNECT_TIMEOUT, SUBMIT_READ_TIMEOUT),
        (CONNECT_TIMEOUT, RESULT_READ_TIMEOUT),
    ]
    assert worst_case_seconds("POST") == CONNECT_TIMEOUT + 30 and worst_case_seconds("get") == CONNECT_TIMEOUT + 10
    assert worst_case_seconds("POST", key_refresh=True) == 2 * (CONNECT_TIMEOUT + 30)


def test_the_shared_session_is_one_per_container_and_never_retries() -> None:
    session = novita.shared_session()
    assert session is novita.shared_session()
    for prefix in ("https://", "http://"):
        retries = session.get_adapter(prefix).max_retries  # type: ignore[attr-defined]
        assert retries.total == 0 and not retries.status_forcelist


# -- Retry-After --------------------------------------------------------------------------------------------
AT = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        ("0.5", 0.5),
        ("0", 0.0),
        ("Tue, 24 Nov 2026 12:00:42 GMT", 42.0),
        ("Tue, 24 Nov 2026 11:59:00 GMT", 0.0),  # already past: go now
        ("Tue, 24 Nov 2026 12:01:00 -0000", 60.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-3", None),
        ("inf", None),
        ("nan", None),
    ],
)
def test_retry_after_reads_seconds_fractions_and_http_dates(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, at=AT) == seconds


@responses.activate
def test_a_throttled_answer_carries_its_retry_after(client: NovitaClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(novita_errors, "now", lambda: AT)
    when = format_datetime(datetime.fromtimestamp(AT + 90, UTC), usegmt=True)
    responses.get(RESULT_URL, status=429, json={"reason": "RATE_LIMIT_EXCEEDED"}, headers={"Retry-After": when})
    with pytest.raises(ProviderThrottled) as caught:
        client.task_result("t")
    assert caught.value.retry_after == 90.0


@responses.activate
def test_a_throttled_answer_without_retry_after_says_so(client: NovitaClient) -> None:
    responses.post(SUBMIT_URL, status=429, json={"reason": "TOO_MANY_CONCURRENT_TASKS"})
    with pytest.raises(ProviderThrottled) as caught:
        client.submit({"images": ["u"], "prompt": "p"})
    assert caught.value.retry_after is None


# -- classification: Novita's reason first, then the HTTP status ------------------------------------------------
@pytest.mark.parametrize(
    ("status", "reason", "error"),
    [
        (400, "BILLING_BALANCE_NOT_ENOUGH", InsufficientBalance),
        (400, "MISSING_API_KEY", ProviderAuth),
        (403, "INVALID_API_KEY", ProviderAuth),
        (403, "API_NOT_ALLOWED", ProviderAuth),
        (403, "NEED_REAL_NAME_VERIFY", ProviderAuth),
        (403, "BILLING_AUTH_FAILED", ProviderAuth),
        (429, "RATE_LIMIT_EXCEEDED", ProviderThrottled),
        (500, "BILLING_FAILED", ProviderUnavailable),
        (500, "CREATE_TASK_FAILED", ProviderUnavailable),
        (500, "GET_RESULT_FAILED", ProviderUnavailable),
        (500, "TASK_FAILED", ProviderUnavailable),
        (400, "INVALID_REQUEST_BODY", ProviderRejected),
        (400, "IMAGE_FILE_EXCEEDS_MAX_SIZE", ProviderRejected),
        (400, "INVALID_IMAGE_FORMAT", ProviderRejected),
        (400, "IMAGE_EXCEEDS_MAX_RESOLUTION", ProviderRejected),
        (400, "INVALID_IMAGE_SIZE", ProviderRejected),
        (400, "ILLEGAL_PROMPT", ProviderRejected),
        (400, "ILLEGAL_IMAGE_CONTENT", ProviderRejected),
        (404, "API_NOT_FOUND", ProviderRejected),
        (404, "TASK_NOT_FOUND", ProviderRejected),
        # the reason wins over a status that would say otherwise
        (500, "ILLEGAL_PROMPT", ProviderRejected),
        (400, "TASK_FAILED", ProviderUnavailable),
        (403, "RATE_LIMIT_EXCEEDED", ProviderThrottled),
        # no reason we know: the status decides
        (503, "SERVICE_UNAVAILABLE", ProviderUnavailable),
        (504, "", ProviderUnavailable),
        (429, "TOO_MANY_CONCURRENT_TASKS", ProviderThrottled),
        (401, "", ProviderAuth),
        (403, "SOMETHING_NEW", ProviderAuth),
        (422, "SOMETHING_NEW", ProviderRejected),
    ],
)
def test_each_reason_maps_to_its_error(status: int, reason: str, error: type[PipelineError]) -> None:
    body = json.dumps({"code": status, "reason": reason, "message": "words from Novita", "metadata": {}})
    found = classify_http_error(status, body)
    assert type(found) is error and "words from Novita" in found.message and f"HTTP {status}" in found.message


@responses.activate
def test_a_low_balance_arrives_as_a_400_and_is_reported_as_such(client: NovitaClient) -> None:
    responses.post(
        SUBMIT_URL, status=400, json={"code": 400, "reason": "BILLING_BALANCE_NOT_ENOUGH", "message": "not enough", "metadata": {}}
    )
    with pytest.raises(InsufficientBalance) as caught:
        client.submit({"images": ["u"], "prompt": "p"})
    assert caught.value.code == "INSUFFICIENT_BALANCE" and len(responses.calls) == 1


# -- the API key: re-read once when refused, never shown --------------------------------------------------------
@pytest.fixture
def secret() -> Iterator[Any]:
    parameters.clear_caches()  # type: ignore[no-untyped-call]
    with mock_aws():
        secrets = boto3.client("secretsmanager")
        secrets.create_secret(Name="novita-key", SecretString=json.dumps({"api_key": API_KEY}))
        yield secrets
    parameters.clear_caches()  # type: ignore[no-untyped-call]


def _answer_by_key(request: Any) -> tuple[int, dict[str, str], str]:
    if request.headers["Authorization"] == f"Bearer {NEW_KEY}":
        return 200, {}, json.dumps({"task_id": "t-new-key"})
    return 401, {}, json.dumps({"code": 401, "reason": "INVALID_API_KEY", "message": "invalid key"})


@responses.activate
def test_a_refused_key_is_read_again_and_the_request_retried_once_with_the_new_one(secret: Any) -> None:
    responses.add_callback(responses.POST, SUBMIT_URL, callback=_answer_by_key)
    client = novita_client(NOVITA, "novita-key")  # reads and caches the old key
    secret.put_secret_value(SecretId="novita-key", SecretString=json.dumps({"api_key": NEW_KEY}))
    entry, source = inline(b"\xff\xd8\xff" + bytes(3000) + b"\xff\xd9")

    assert client.submit({"images": [entry], "prompt": "p"}) == "t-new-key"

    assert [call.request.headers["Authorization"] for call in responses.calls] == [f"Bearer {API_KEY}", f"Bearer {NEW_KEY}"]
    assert source.count == 2  # the retry sent the whole image again
    assert json.loads(cast(bytes, responses.calls[1].request.body))["images"][0].startswith("data:image/jpeg;base64,")
    assert NEW_KEY not in repr(client)


@responses.activate
def test_an_unchanged_key_is_not_retried(secret: Any) -> None:
    responses.add_callback(responses.GET, RESULT_URL, callback=_answer_by_key)
    client = novita_client(NOVITA, "novita-key")
    with pytest.raises(ProviderAuth):
        client.task_result("t")
    assert len(responses.calls) == 1


@responses.activate
def test_a_client_given_a_key_does_not_look_for_another(client: NovitaClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "load_api_key", lambda *args, **kwargs: pytest.fail("the secret was read"))
    responses.post(SUBMIT_URL, status=403, json={"reason": "INVALID_API_KEY"})
    with pytest.raises(ProviderAuth):
        client.submit({"images": ["u"], "prompt": "p"})
    assert len(responses.calls) == 1


def test_refresh_bypasses_the_powertools_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[dict[str, Any]] = []

    class Provider:
        def get(self, name: str, **kwargs: Any) -> str:
            asked.append({"name": name, **kwargs})
            return " sk-plain-text-key \n"

    monkeypatch.setattr(secrets, "_secrets_provider", lambda: Provider())
    assert secrets.load_api_key("s") == "sk-plain-text-key"
    assert secrets.load_api_key("s", refresh=True) == "sk-plain-text-key"
    assert [a["force_fetch"] for a in asked] == [False, True] and all(a["max_age"] == 300 for a in asked)


def _json_escaped(text: str) -> str:
    return "".join(f"\\u{ord(char):04x}" for char in text)


def _url_encoded(text: str) -> str:
    return "".join(f"%{byte:02X}" for byte in text.encode())


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"code": 401, "reason": "INVALID_API_KEY", "message": f"invalid key {API_KEY}"}),
        '{"code": 401, "reason": "INVALID_API_KEY", "message": "invalid key ' + _json_escaped(API_KEY) + '"}',
        '{"reason": "INVALID_API_KEY", "message": "bad", "metadata": {"echo": "' + _json_escaped(API_KEY[:4]) + API_KEY[4:] + '"}}',
        '{"message": "' + json.dumps(json.dumps({"k": _json_escaped(API_KEY)}))[1:-1] + '"}',  # escaped twice
        f"<html>GET /v3?key={_url_encoded(API_KEY)} refused</html>",
        f"<html>GET /v3?key={_url_encoded(API_KEY).lower()} refused, twice: {_url_encoded(_url_encoded(API_KEY))}</html>",
        f"Authorization: Bearer {API_KEY}",
        # found by attacking the change: combinations of the forms above, and HTML character references
        "<p>key " + _json_escaped(API_KEY).replace("\\", "%5C") + "</p>",  # URL-encoded JSON escapes
        '{"message": "' + _url_encoded(API_KEY).replace("%", "\\u0025") + '"}',  # JSON-escaped percent signs
        "<p>key " + "".join(f"&#{ord(char)};" for char in API_KEY) + "</p>",
        "<p>key " + "".join(f"&#x{ord(char):X};" for char in API_KEY[:8]) + API_KEY[8:] + "</p>",
        # the key where the provider's message is cut short: no part of it may survive the cut
        json.dumps({"message": "x" * 280 + f" {API_KEY}", "reason": "INVALID_API_KEY"}),
    ],
)
@responses.activate
def test_the_key_never_appears_in_an_error_or_a_log(client: NovitaClient, body: str, logged: io.StringIO) -> None:
    responses.post(SUBMIT_URL, status=401, body=body)
    with pytest.raises(ProviderAuth) as caught:
        client.submit({"images": ["u"], "prompt": "p"})
    shown = f"{caught.value} {caught.value.message!r} {caught.value.args!r} {client!r}"
    assert "Novita answered an error" in logged.getvalue()
    for text in (shown, logged.getvalue()):
        assert "SECRET-9f8e7d6c5b4a" not in text and "9f8e7d6c5b4a" not in text and "sk-test-SECRET" not in text
    assert "***" in caught.value.message


@responses.activate
def test_after_a_rotation_neither_key_appears(secret: Any) -> None:
    def echo(request: Any) -> tuple[int, dict[str, str], str]:
        return 401, {}, json.dumps({"reason": "INVALID_API_KEY", "message": f"{API_KEY} and {NEW_KEY} refused"})

    responses.add_callback(responses.POST, SUBMIT_URL, callback=echo)
    client = novita_client(NOVITA, "novita-key")
    secret.put_secret_value(SecretId="novita-key", SecretString=NEW_KEY)
    with pytest.raises(ProviderAuth) as caught:
        client.submit({"images": ["u"], "prompt": "p"})
    assert len(responses.calls) == 2
    assert API_KEY not in caught.value.message and NEW_KEY not in caught.value.message
