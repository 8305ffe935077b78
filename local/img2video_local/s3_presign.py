"""S3's view of a presigned image URL, as the emulator fetches one: what S3 refuses (SigV2, the global endpoint, a
wrong region, an expired or future signature) and how it answers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

# -- S3's view of a presigned image URL ---------------------------------------------------------------
# moto serves any presigned URL, SigV2 included; S3 does not. A bucket created since 2020 refuses SigV2,
# Block Public Access (the default since 2023) refuses unsigned reads, and only a regional endpoint is
# safe: the global host redirects for a bucket outside us-east-1, so a stack in any other region breaks.
SIGV4_ALGORITHM = "AWS4-HMAC-SHA256"


SIGV4_PARAMETERS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Expires")


MAX_PRESIGN_SECONDS = 604800  # SigV4 presigned URLs live at most a week


CLOCK_SKEW_SECONDS = 900


_REGIONAL_S3_HOST = re.compile(
    r"(?:^|\.)s3(?:-accesspoint|-object-lambda)?(?:\.dualstack)?[.-](?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)\.amazonaws\.com(?:\.cn)?$"
)


@dataclass(frozen=True)
class S3Refusal:
    """What S3 answers instead of the object: the HTTP status, its error code and message."""

    status: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"S3 refused the image URL (HTTP {self.status} {self.code}): {self.message}"


def is_s3_host(host: str) -> bool:
    if not host.endswith((".amazonaws.com", ".amazonaws.com.cn")):
        return False
    return any(label == "s3" or label.startswith("s3-") for label in host.split("."))


def presigned_url_refusal(url: str, now: float) -> S3Refusal | None:
    """S3's refusal of an image URL, or None when S3 would serve it (or it is not an S3 URL at all)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not is_s3_host(host):
        return None
    query = {name: values[0] for name, values in parse_qs(parts.query, keep_blank_values=True).items()}
    if "X-Amz-Algorithm" not in query:
        if "Signature" in query or "AWSAccessKeyId" in query:
            return S3Refusal(
                400, "InvalidRequest", "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."
            )
        return S3Refusal(403, "AccessDenied", "Access Denied")
    if query["X-Amz-Algorithm"] != SIGV4_ALGORITHM:
        return _query_error(f'X-Amz-Algorithm only supports "{SIGV4_ALGORITHM}"')
    if any(not query.get(name) for name in SIGV4_PARAMETERS):
        return _query_error(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, "
            "X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
        )
    return _scope_refusal(host, query["X-Amz-Credential"]) or _time_refusal(query["X-Amz-Date"], query["X-Amz-Expires"], now)


def _scope_refusal(host: str, credential: str) -> S3Refusal | None:
    """S3's refusal of a signature's scope: its form, and its region against the endpoint's."""
    regional = _REGIONAL_S3_HOST.search(host)
    scope = credential.split("/")
    if len(scope) != 5 or scope[3] != "s3" or scope[4] != "aws4_request":
        return _query_error("Error parsing the X-Amz-Credential parameter; expecting <AKID>/YYYYMMDD/REGION/s3/aws4_request")
    if regional is None:
        return S3Refusal(
            301,
            "PermanentRedirect",
            "The bucket you are attempting to access must be addressed using the specified endpoint. "
            f"Please send all future requests to this endpoint. (a regional endpoint such as s3.{scope[2]}.amazonaws.com)",
        )
    if scope[2] != regional["region"]:
        expected = regional["region"]
        return _query_error(f"Error parsing the X-Amz-Credential parameter; the region '{scope[2]}' is wrong; expecting '{expected}'")
    return None


def _time_refusal(date: str, expires_text: str, now: float) -> S3Refusal | None:
    """S3's refusal of a signature's time: its form, too long a life, not valid yet, or expired."""
    try:
        signed = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return _query_error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    if not expires_text.isdigit():
        return _query_error("X-Amz-Expires should be a number")
    expires = int(expires_text)
    if expires > MAX_PRESIGN_SECONDS:
        return _query_error(
            "X-Amz-Expires must be less than a week (in seconds) that is, "
            f"the given X-Amz-Expires must be less than {MAX_PRESIGN_SECONDS} seconds"
        )
    if signed > now + CLOCK_SKEW_SECONDS:
        return S3Refusal(403, "AccessDenied", "Request is not valid yet")
    if signed + expires < now:
        return S3Refusal(403, "AccessDenied", "Request has expired")
    return None


def _query_error(message: str) -> S3Refusal:
    return S3Refusal(400, "AuthorizationQueryParametersError", message)
