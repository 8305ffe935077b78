"""Streaming the provider's video into S3: https only, no private hops, one part in memory at a time."""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from img2video.clients import transfer_client
from img2video.errors import DownloadFailed, DownloadInterrupted
from img2video.observability import logger

PART_SIZE = 8 * 1024 * 1024  # S3 parts must be ≥ 5 MiB but the last; 8 MiB keeps memory flat
CHUNK_SIZE = 256 * 1024
MAX_REDIRECTS = 3
TIMEOUT = (5.0, 60.0)

Resolver = Callable[[str], list[str]]


def _resolve(host: str) -> list[str]:
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None)})
    except socket.gaierror as exc:
        raise DownloadInterrupted(f"the video host {host} could not be resolved ({exc.strerror})") from None


def check_video_url(url: str, allow_loopback_http: bool, resolve: Resolver | None = None) -> None:
    """Refuse anything but https to a public address; local mode may allow http to loopback."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host:
        raise DownloadFailed("the video URL has no host")
    addresses = [host] if _is_ip(host) else (resolve or _resolve)(host)
    loopback = all(ipaddress.ip_address(a).is_loopback for a in addresses)
    if allow_loopback_http and loopback and parts.scheme in ("http", "https"):
        return
    if parts.scheme != "https":
        raise DownloadFailed(f"refused to download the video over {parts.scheme or 'no scheme'}: only https is allowed")
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if not ip.is_global:
            raise DownloadFailed(f"refused to download the video from {host}: it resolves to a non-public address")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class StoredVideo:
    size_bytes: int
    sha256: str


def _open(url: str, allow_loopback_http: bool, session: requests.Session, resolve: Resolver | None) -> requests.Response:
    for _ in range(MAX_REDIRECTS + 1):
        check_video_url(url, allow_loopback_http, resolve)
        try:
            response = session.get(url, stream=True, allow_redirects=False, timeout=TIMEOUT)
        except requests.exceptions.RequestException as exc:
            raise DownloadInterrupted(f"the video could not be fetched: {type(exc).__name__}") from None
        if response.is_redirect and response.headers.get("Location"):
            url = urljoin(url, response.headers["Location"])
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
    session: requests.Session | None = None,
    resolve: Resolver | None = None,
) -> StoredVideo:
    """Copy the video to S3 with a multipart upload, hashing as it goes; abort the upload on any failure."""
    http = session or requests.Session()
    response = _open(url, allow_loopback_http, http, resolve)
    expected = int(response.headers.get("Content-Length") or 0)
    s3 = transfer_client()
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="video/mp4", Metadata=metadata)["UploadId"]
    digest = hashlib.sha256()
    size = 0
    etags: list[dict[str, Any]] = []
    try:
        for number, part in enumerate(_parts(_chunks(response)), start=1):
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


def _chunks(response: requests.Response) -> Iterator[bytes]:
    try:
        yield from response.iter_content(CHUNK_SIZE)
    except (requests.exceptions.RequestException, OSError) as exc:
        raise DownloadInterrupted(f"the video download broke off: {type(exc).__name__}") from None
