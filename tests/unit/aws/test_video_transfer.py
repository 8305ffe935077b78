"""The video URL as a hostile (or hijacked) provider could write it: where the download may go, how much it may take."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
import urllib3.util.connection
from img2video.aws import video_transfer
from img2video.aws.video_transfer import check_video_url, is_public_address, stream_video_to_s3
from img2video.core.errors import DownloadFailed, DownloadInterrupted
from urllib3.connection import HTTPSConnection

from tests.conftest import Aws

PUBLIC = "93.184.216.34"


def resolver(answers: dict[str, list[str]]) -> Any:
    """A DNS stand-in: names from `answers`, addresses as themselves; records every name it was asked."""

    def resolve(host: str) -> list[str]:
        resolve.asked.append(host)  # type: ignore[attr-defined]
        return answers.get(host, [host])

    resolve.asked = []  # type: ignore[attr-defined]
    return resolve


# -- one parser decides the host: the one requests connects to ------------------------------------------------
@pytest.mark.parametrize(
    ("url", "connects_to"),
    [
        ("https://169.254.169.254\\@cdn.example.com/v.mp4", "169.254.169.254"),
        ("https://cdn.example.com\\@169.254.169.254/v.mp4", "cdn.example.com"),
        ("https://user@evil@cdn.example.com/v.mp4", "cdn.example.com"),
        ("HTTPS://CDN.Example.COM/v.mp4", "cdn.example.com"),
    ],
)
def test_the_host_judged_is_the_host_requests_connects_to(url: str, connects_to: str) -> None:
    resolve = resolver({"cdn.example.com": [PUBLIC]})
    try:
        target = check_video_url(url, allow_loopback_http=False, resolve=resolve)
    except DownloadFailed as exc:
        assert "non-public address (169.254.169.254)" in exc.message
    else:
        assert target.host == connects_to and target.address == PUBLIC
    assert resolve.asked == [connects_to]


# -- every special-purpose range is refused, also hidden inside IPv6 forms -------------------------------------
REFUSED = {
    "loopback": "127.0.0.1",
    "private-10": "10.1.2.3",
    "private-172": "172.16.0.1",
    "private-192": "192.168.1.1",
    "link-local (instance metadata)": "169.254.169.254",
    "cgnat": "100.64.0.1",
    "this-network": "0.0.0.0",
    "multicast": "224.0.0.1",
    "reserved": "240.0.0.1",
    "broadcast": "255.255.255.255",
    "benchmarking": "198.18.0.1",
    "documentation": "192.0.2.1",
    "ipv6-loopback": "::1",
    "ipv6-unspecified": "::",
    "ipv6-unique-local": "fd00::1",
    "ipv6-link-local": "fe80::1",
    "ipv6-link-local-with-zone": "fe80::1%eth0",
    "ipv6-multicast": "ff02::1",
    "ipv4-mapped metadata": "::ffff:169.254.169.254",
    "ipv4-mapped loopback": "::ffff:127.0.0.1",
    "ipv4-compatible loopback": "::127.0.0.1",
    "nat64 metadata": "64:ff9b::a9fe:a9fe",
    "nat64 private": "64:ff9b::10.0.0.1",
    "nat64 local-use prefix": "64:ff9b:1::a9fe:a9fe",
    "6to4 of a private address": "2002:0a00:0001::1",
    "teredo": "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "documentation-v6": "2001:db8::1",
    "documentation-v6 (RFC 9637)": "3fff::1",
    "ietf-protocol-assignments": "192.0.0.8",
    "site-local (deprecated)": "fec0::1",
}


@pytest.mark.parametrize("address", REFUSED.values(), ids=REFUSED.keys())
def test_special_purpose_addresses_are_refused(address: str) -> None:
    assert not is_public_address(address)
    with pytest.raises(DownloadFailed, match="non-public address"):
        check_video_url("https://cdn.example.com/v.mp4", False, resolver({"cdn.example.com": [PUBLIC, address]}))


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert is_public_address(address)


@pytest.mark.parametrize(
    "url",
    [
        "https://2852039166/v.mp4",
        "https://0xa9.0xfe.0xa9.0xfe/v.mp4",
        "https://0251.0376.0251.0376/v.mp4",
        "https://[::ffff:a9fe:a9fe]/v.mp4",
    ],
)
def test_numeric_spellings_of_the_metadata_address_are_refused(url: str) -> None:
    with pytest.raises(DownloadFailed, match="non-public address"):
        check_video_url(url, False)  # the real resolver: it reads these as the socket would


# -- the connection goes to the address that was checked ------------------------------------------------------
@pytest.fixture
def listener() -> Iterator[tuple[int, list[object]]]:
    """A TCP port on loopback that counts the connections it receives (the rebinding target)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[object] = []

    def run() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            accepted.append(connection)
            connection.close()

    threading.Thread(target=run, daemon=True).start()
    yield server.getsockname()[1], accepted
    server.close()


def test_dns_rebinding_cannot_reach_loopback(monkeypatch: pytest.MonkeyPatch, listener: tuple[int, list[object]]) -> None:
    """The name resolves to a public address when checked and to 127.0.0.1 afterwards: the download still goes to the first."""
    port, accepted = listener
    real_getaddrinfo = socket.getaddrinfo
    answers = iter([PUBLIC])

    def rebinding(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "video.rebind.test":
            return real_getaddrinfo(next(answers, "127.0.0.1"), *args, **kwargs)
        return real_getaddrinfo(host, *args, **kwargs)

    connected_to: list[str] = []

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        connected_to.append(address[0])
        if address[0] == PUBLIC:
            raise ConnectionRefusedError("no network here")
        return real_create_connection(address, *args, **kwargs)

    real_create_connection = urllib3.util.connection.create_connection
    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    with pytest.raises(DownloadInterrupted, match="could not be fetched"):
        video_transfer._open(f"https://video.rebind.test:{port}/v.mp4", False, None)
    assert connected_to == [PUBLIC]
    assert accepted == []


def test_a_pinned_connection_keeps_the_name_for_tls_and_the_host_header() -> None:
    connection = video_transfer._pinned(HTTPSConnection, PUBLIC)(host="cdn.example.com", port=443)
    assert connection.host == "cdn.example.com"  # SNI, certificate check and Host header all use it


# -- the size limit holds whatever Content-Length says ----------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    mode = "endless"
    hosts: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Handler.hosts.append(self.headers.get("Host", ""))
        self.send_response(200)
        if self.mode == "huge-length":
            self.send_header("Content-Length", str(10 * 1024**3))
        self.end_headers()
        chunk = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * (64 * 1024 - 12)
        try:
            for _ in range(10_000):  # 640 MiB if nobody stops reading
                self.wfile.write(chunk)
        except OSError:
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def video_server() -> Iterator[int]:
    _Handler.protocol_version = "HTTP/1.0"  # no Content-Length: the body ends when the connection does
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("mode", "expected"), [("huge-length", "announces 10737418240 bytes"), ("endless", "sent more than 2097152 bytes")]
)
def test_a_video_larger_than_the_limit_is_refused_while_streaming(aws: Aws, video_server: int, mode: str, expected: str) -> None:
    _Handler.mode, _Handler.hosts = mode, []
    url = f"http://video.local.test:{video_server}/v.mp4"
    resolve = resolver({"video.local.test": ["127.0.0.1"]})
    with pytest.raises(DownloadFailed, match=expected):
        stream_video_to_s3(url, aws.output_bucket, "videos/v.mp4", {}, allow_loopback_http=True, resolve=resolve, max_bytes=2 * 1024 * 1024)
    assert aws.s3.list_objects_v2(Bucket=aws.output_bucket).get("KeyCount", 0) == 0
    assert aws.s3.list_multipart_uploads(Bucket=aws.output_bucket).get("Uploads", []) == []
    assert _Handler.hosts == [f"video.local.test:{video_server}"]  # connected to the pinned address, asked for the name
