"""Streaming the provider's video into S3: https only, no private hops, one part in memory at a time."""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlparse

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from img2video.aws.clients import transfer_client
from img2video.core.errors import DownloadFailed, DownloadInterrupted
from img2video.core.settings import DEFAULT_MAX_VIDEO_BYTES
from img2video.core.storing import StoredVideo
from img2video.observability import logger

PART_SIZE = 8 * 1024 * 1024  # S3 parts must be ≥ 5 MiB but the last; 8 MiB keeps memory flat
CHUNK_SIZE = 256 * 1024
MAX_REDIRECTS = 3
TIMEOUT = (5.0, 60.0)

Resolver = Callable[[str], list[str]]

# Special-purpose IPv6 ranges that carry an IPv4 address in their last 32 bits: NAT64 (RFC 6052, RFC 8215)
# and the deprecated IPv4-compatible form. The address they reach is judged by that IPv4 address.
_IPV4_TRANSLATED = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"), ipaddress.ip_network("::/96"))
# Special-purpose ranges some Python versions' ipaddress still calls global: carrier-grade NAT (RFC 6598),
# IETF protocol assignments (RFC 6890), IPv6 site-local (deprecated, RFC 3879) and documentation (RFC 9637).
_ALSO_SPECIAL = tuple(
    ipaddress.ip_network(network) for network in ("100.64.0.0/10", "192.0.0.0/24", "fec0::/10", "3fff::/20", "2001:db8::/32")
)


def _resolve(host: str) -> list[str]:
    try:
        return list(dict.fromkeys(str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)))
    except (socket.gaierror, UnicodeError) as exc:
        raise DownloadInterrupted(f"the video host {host} could not be resolved ({type(exc).__name__})") from None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for: mapped, 6to4, Teredo, NAT64 or IPv4-compatible forms."""
    found = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if any(ip in network for network in _IPV4_TRANSLATED):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [address for address in found if address is not None]


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as getaddrinfo gives it; a zone id (fe80::1%eth0) names a link, so the address is judged without it."""
    return ipaddress.ip_address(address.split("%", 1)[0])


def is_public_address(address: str) -> bool:
    """True only for an ordinary globally routable unicast address, judged also by any IPv4 address it embeds."""
    ip = _ip(address)
    if isinstance(ip, ipaddress.IPv6Address) and (embedded := _embedded_ipv4(ip)):
        return all(is_public_address(str(inner)) for inner in embedded)  # it reaches what it embeds
    special = (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or any(ip in network for network in _ALSO_SPECIAL)
    )
    return not special


@dataclass(frozen=True)
class Target:
    """One hop of the download: the request as requests will send it, and the one address it may connect to."""

    request: requests.PreparedRequest
    host: str
    address: str


def check_video_url(url: str, allow_loopback_http: bool, resolve: Resolver | None = None) -> Target:
    """Decide where a hop goes, once: https to a public address (local mode: also http to loopback).

    The host is read from the URL exactly as requests prepares and routes it (so `https://1.2.3.4\\@cdn/` is
    judged as 1.2.3.4, where requests would go), resolved once, and every address it resolves to must pass;
    the connection is then pinned to the first, so a second DNS answer (rebinding) is never used.
    """
    try:
        prepared = requests.Request("GET", url).prepare()
    except (requests.exceptions.RequestException, ValueError) as exc:
        raise DownloadFailed(f"the video URL is not a valid URL ({type(exc).__name__})") from None
    parts = urlparse(str(prepared.url))
    host = str(parts.hostname or "")
    if not host:
        raise DownloadFailed("the video URL has no host")
    if parts.scheme not in ("http", "https"):
        raise DownloadFailed(f"refused to download the video over {parts.scheme or 'no scheme'}: only https is allowed")
    addresses = (resolve or _resolve)(host)
    if not addresses:
        raise DownloadInterrupted(f"the video host {host} resolved to no address")
    if allow_loopback_http and all(_ip(a).is_loopback for a in addresses):
        return Target(prepared, host, addresses[0])
    if parts.scheme != "https":
        raise DownloadFailed(f"refused to download the video over {parts.scheme}: only https is allowed")
    refused = [a for a in addresses if not is_public_address(a)]
    if refused:
        raise DownloadFailed(f"refused to download the video from {host}: it resolves to a non-public address ({refused[0]})")
    return Target(prepared, host, addresses[0])


def _pinned(base: type[HTTPConnection], address: str) -> type[HTTPConnection]:
    """A connection class that opens its socket to `address`, while Host, SNI and certificate checks keep the name."""

    def _new_conn(self: Any) -> socket.socket:
        name, self._dns_host = self._dns_host, address
        try:
            return base._new_conn(self)
        finally:
            self._dns_host = name

    return type(f"Pinned{base.__name__}", (base,), {"_new_conn": _new_conn})


class PinnedAdapter(HTTPAdapter):
    """requests' adapter with every connection going to the one address that was checked; one attempt, never retried."""

    def __init__(self, address: str) -> None:
        self._address = address
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        pools = {
            "http": type("PinnedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": _pinned(HTTPConnection, self._address)}),
            "https": type("PinnedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": _pinned(HTTPSConnection, self._address)}),
        }
        self.poolmanager.pool_classes_by_scheme = pools


def _open(url: str, allow_loopback_http: bool, resolve: Resolver | None) -> requests.Response:
    for _ in range(MAX_REDIRECTS + 1):
        target = check_video_url(url, allow_loopback_http, resolve)  # every hop is judged and pinned afresh
        try:
            response = PinnedAdapter(target.address).send(target.request, stream=True, timeout=TIMEOUT)
        except requests.exceptions.RequestException as exc:
            raise DownloadInterrupted(f"the video could not be fetched: {type(exc).__name__}") from None
        if response.is_redirect and response.headers.get("Location"):
            url = urljoin(target.request.url or url, response.headers["Location"])
            response.close()
            continue
        if response.status_code in (401, 403, 404, 410):
            response.close()  # a presigned video_url that expired: a fresh task result gives a new one
            raise DownloadInterrupted(f"the video URL was refused (HTTP {response.status_code}); it may have expired")
        if response.status_code >= 500 or response.status_code == 429:
            response.close()
            raise DownloadInterrupted(f"the video host answered HTTP {response.status_code}")
        if response.status_code != 200:
            response.close()
            raise DownloadFailed(f"the video host answered HTTP {response.status_code}")
        return response
    raise DownloadFailed(f"the video URL redirected more than {MAX_REDIRECTS} times")


def _content_length(response: requests.Response) -> int:
    try:
        return max(0, int(response.headers.get("Content-Length") or 0))
    except ValueError:
        return 0  # unreadable: the bytes themselves are counted


def _too_large(what: str, max_bytes: int) -> str:
    return f"the video host {what}; videos larger than {max_bytes} bytes (the stack's MaxVideoBytes) are not stored"


def _parts(chunks: Iterator[bytes]) -> Iterator[bytes]:
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= PART_SIZE:
            yield bytes(buffer[:PART_SIZE])
            del buffer[:PART_SIZE]
    if buffer:
        yield bytes(buffer)


def stream_video_to_s3(
    url: str,
    bucket: str,
    key: str,
    metadata: dict[str, str],
    allow_loopback_http: bool = False,
    resolve: Resolver | None = None,
    max_bytes: int = DEFAULT_MAX_VIDEO_BYTES,
) -> StoredVideo:
    """Copy the video to S3 with a multipart upload, hashing as it goes; abort the upload on any failure.

    At most `max_bytes` are read, whatever the answer's Content-Length says.
    """
    response = _open(url, allow_loopback_http, resolve)
    expected = _content_length(response)
    if expected > max_bytes:
        response.close()
        raise DownloadFailed(_too_large(f"announces {expected} bytes", max_bytes))
    s3 = transfer_client()
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="video/mp4", Metadata=metadata)["UploadId"]
    digest = hashlib.sha256()
    size = 0
    etags: list[dict[str, Any]] = []
    try:
        for number, part in enumerate(_parts(_chunks(response, max_bytes)), start=1):
            if number == 1 and part[4:8] != b"ftyp":
                raise DownloadFailed("the downloaded file is not an MP4 video (no ftyp box)")
            digest.update(part)
            size += len(part)
            answer = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=part)
            etags.append({"PartNumber": number, "ETag": answer["ETag"]})
        if size == 0:
            raise DownloadInterrupted("the video download was empty")
        if expected and size != expected:
            raise DownloadInterrupted(f"the video download was truncated: {size} of {expected} bytes")
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": etags})
    except BaseException:
        _abort(s3, bucket, key, upload_id)
        raise
    finally:
        response.close()
    return StoredVideo(size_bytes=size, sha256=digest.hexdigest())


def _abort(s3: Any, bucket: str, key: str, upload_id: str) -> None:
    """Best effort: if CompleteMultipartUpload succeeded but its answer was lost, there is nothing to abort,
    and the lifecycle rule cleans up any upload an abort could not reach."""
    try:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except Exception as exc:  # never hide the error that brought us here
        logger.warning("Could not abort the multipart upload", extra={"key": key, "error": type(exc).__name__})


def _chunks(response: requests.Response, max_bytes: int) -> Iterator[bytes]:
    """The body as it arrives, refused as soon as it passes `max_bytes`."""
    received = 0
    try:
        for chunk in response.iter_content(CHUNK_SIZE):
            received += len(chunk)
            if received > max_bytes:
                raise DownloadFailed(_too_large(f"sent more than {max_bytes} bytes", max_bytes))
            yield chunk
    except (requests.exceptions.RequestException, OSError) as exc:
        raise DownloadInterrupted(f"the video download broke off: {type(exc).__name__}") from None
