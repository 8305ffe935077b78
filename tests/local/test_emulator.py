"""The Novita emulator on loopback: S3's refusal of presigned URLs, Retry-After, slow answers and the time scale."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import boto3
import pytest
import requests
from botocore.config import Config
from img2video_local.emulator import SUBMIT_PATH, EmulatorConfig, NovitaEmulator, seconds_text
from img2video_local.emulator_faults import Faults, FaultSpecError
from img2video_local.s3_presign import presigned_url_refusal
from moto import mock_aws

from tests.conftest import png_bytes

KEY = "emulator-test-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
BUCKET = "img2video-emulator-test"
OBJECT = "incoming/a b/sea.png"
REGIONAL = "https://s3.us-east-1.amazonaws.com"
SIGV2 = "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."
# Tiny and short: PyAV renders 540p frames, two of them.
FAST: dict[str, Any] = {"api_key": KEY, "fps": 1, "queue_seconds": 0.05, "generation_seconds": 0.2}


@contextmanager
def emulator(faults: str = "", **config: Any) -> Iterator[NovitaEmulator]:
    running = NovitaEmulator(EmulatorConfig(**{**FAST, **config}, faults=Faults.parse(faults)))
    running.start()
    try:
        yield running
    finally:
        running.stop()


def submit(novita: NovitaEmulator, image: str, timeout: float = 5) -> requests.Response:
    body: dict[str, Any] = {"images": [image], "prompt": "waves roll in", "duration": 1, "resolution": "540p"}
    return requests.post(novita.base_url + SUBMIT_PATH, json=body, headers=HEADERS, timeout=timeout)


def result(novita: NovitaEmulator, task_id: str) -> dict[str, Any]:
    answer = requests.get(f"{novita.base_url}/v3/async/task-result", params={"task_id": task_id}, headers=HEADERS, timeout=5)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def finished(novita: NovitaEmulator, task_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        data = result(novita, task_id)
        if data["task"]["status"] in ("TASK_STATUS_SUCCEED", "TASK_STATUS_FAILED") or time.monotonic() > deadline:
            return data
        time.sleep(0.05)


def data_uri() -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(16, 12)).decode()


@pytest.fixture
def s3_object() -> Iterator[None]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key=OBJECT, Body=png_bytes(16, 12))
        yield


def presign(signature_version: str, endpoint_url: str | None = None, expires: int = 600) -> str:
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint_url, config=Config(signature_version=signature_version))
    url: str = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": OBJECT}, ExpiresIn=expires)
    return url


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True)) | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


# -- S3's refusals, end to end through moto ---------------------------------------------------------


def refused_reason(image_url: str) -> str:
    with emulator() as novita:
        answer = submit(novita, image_url)
        assert answer.status_code == 200  # Novita takes the URL; the fetch fails later, as the task's reason
        data = finished(novita, answer.json()["task_id"])
        assert data["task"]["status"] == "TASK_STATUS_FAILED" and data["videos"] == []
        assert novita.requests_seen["image_refused"] == 1 and novita.served_videos == {}
        reason: str = data["task"]["reason"]
        return reason


@pytest.mark.usefixtures("s3_object")
def test_a_sigv2_url_is_refused_with_s3s_message() -> None:
    url = presign("s3")
    assert "AWSAccessKeyId=" in url and requests.get(url, timeout=5).status_code == 200  # moto alone would serve it
    assert SIGV2 in refused_reason(url)


@pytest.mark.usefixtures("s3_object")
def test_a_sigv4_url_on_the_global_host_is_refused() -> None:
    url = presign("s3v4")
    assert urlsplit(url).hostname in (f"{BUCKET}.s3.amazonaws.com", "s3.amazonaws.com") and "X-Amz-Signature=" in url
    assert "PermanentRedirect" in refused_reason(url)


@pytest.mark.usefixtures("s3_object")
def test_an_expired_sigv4_url_is_refused() -> None:
    signed = datetime.fromtimestamp(time.time() - 7200, UTC).strftime("%Y%m%dT%H%M%SZ")
    url = with_query(presign("s3v4", REGIONAL, expires=3600), **{"X-Amz-Date": signed})
    assert "Request has expired" in refused_reason(url)


@pytest.mark.usefixtures("s3_object")
def test_a_regional_sigv4_url_is_fetched_and_becomes_a_video() -> None:
    url = presign("s3v4", REGIONAL)
    assert urlsplit(url).hostname in (f"{BUCKET}.s3.us-east-1.amazonaws.com", "s3.us-east-1.amazonaws.com")
    with emulator() as novita:
        task_id = submit(novita, url).json()["task_id"]
        data = finished(novita, task_id)
        assert data["task"]["status"] == "TASK_STATUS_SUCCEED", data["task"]
        video = requests.get(data["videos"][0]["video_url"], timeout=5)
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
        assert novita.served_videos[task_id] == video.content and novita.requests_seen["image_refused"] == 0
        assert novita.submissions[0]["image"] == f"{urlsplit(url).netloc}{urlsplit(url).path}"


# -- S3's rules as a pure function ------------------------------------------------------------------

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC).timestamp()
SIGV4 = {
    "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
    "X-Amz-Credential": "AKIDEXAMPLE/20260102/eu-west-1/s3/aws4_request",
    "X-Amz-Date": "20260102T115000Z",
    "X-Amz-Expires": "3600",
    "X-Amz-SignedHeaders": "host",
    "X-Amz-Signature": "ab" * 32,
}


def url(host: str, **query: str) -> str:
    return f"https://{host}/incoming/sea.png?{urlencode(query)}"


@pytest.mark.parametrize(
    "host",
    [
        "bucket.s3.eu-west-1.amazonaws.com",
        "s3.eu-west-1.amazonaws.com",
        "my.dotted.bucket.s3.eu-west-1.amazonaws.com",
        "s3-eu-west-1.amazonaws.com",
        "bucket.s3.dualstack.eu-west-1.amazonaws.com",
    ],
)
def test_regional_sigv4_urls_pass(host: str) -> None:
    assert presigned_url_refusal(url(host, **SIGV4), NOW) is None


@pytest.mark.parametrize(
    ("address", "code", "message"),
    [
        (url("bucket.s3.eu-west-1.amazonaws.com", AWSAccessKeyId="AKID", Signature="x", Expires="1767355200"), "InvalidRequest", SIGV2),
        (url("bucket.s3.eu-west-1.amazonaws.com"), "AccessDenied", "Access Denied"),
        (url("bucket.s3.amazonaws.com", **SIGV4), "PermanentRedirect", "s3.eu-west-1.amazonaws.com"),
        (url("s3.amazonaws.com", **SIGV4), "PermanentRedirect", "must be addressed using the specified endpoint"),
        (url("bucket.s3.us-east-1.amazonaws.com", **SIGV4), "AuthorizationQueryParametersError", "the region 'eu-west-1' is wrong"),
        (url("bucket.s3.eu-west-1.amazonaws.com", **{**SIGV4, "X-Amz-Expires": "604801"}), "AuthorizationQueryParametersError", "week"),
        (url("bucket.s3.eu-west-1.amazonaws.com", **{**SIGV4, "X-Amz-Date": "20260102T105959Z"}), "AccessDenied", "Request has expired"),
        (url("bucket.s3.eu-west-1.amazonaws.com", **{**SIGV4, "X-Amz-Date": "20260103T000000Z"}), "AccessDenied", "not valid yet"),
        (url("bucket.s3.eu-west-1.amazonaws.com", **{**SIGV4, "X-Amz-Signature": ""}), "AuthorizationQueryParametersError", "requires"),
        (url("bucket.s3.eu-west-1.amazonaws.com", **{**SIGV4, "X-Amz-Algorithm": "AWS4-ECDSA-P256-SHA256"}), "", "only supports"),
    ],
)
def test_what_s3_refuses(address: str, code: str, message: str) -> None:
    refusal = presigned_url_refusal(address, NOW)
    assert refusal is not None and code in refusal.code and message in refusal.message


@pytest.mark.parametrize("address", ["data:image/png;base64,AAAA", "https://images.example.com/sea.png", "http://127.0.0.1:9/x.png"])
def test_other_urls_are_not_s3s_business(address: str) -> None:
    assert presigned_url_refusal(address, NOW) is None


# -- Retry-After, slow answers, the time scale ------------------------------------------------------


def test_retry_after_is_scaled_and_fractional() -> None:
    with emulator("429=1,retry_after=30", time_scale=0.01) as novita:
        answer = submit(novita, data_uri())
        assert answer.status_code == 429 and answer.json()["reason"] == "RATE_LIMIT_EXCEEDED"
        assert answer.headers["Retry-After"] == "0.3"
        assert novita.submissions == [] and novita.requests_seen["throttled"] == 1


def test_retry_after_is_drawn_from_a_range_in_whole_seconds() -> None:
    with emulator("429=1,retry_after=5-30,seed=3") as novita:
        values = {int(submit(novita, data_uri()).headers["Retry-After"]) for _ in range(8)}
        assert all(5 <= v <= 30 for v in values) and len(values) > 1


def test_the_concurrency_limit_answers_429_with_a_scaled_retry_after() -> None:
    with emulator("retry_after=20", concurrency=1, generation_seconds=600, time_scale=0.1) as novita:
        assert submit(novita, data_uri()).status_code == 200
        answer = submit(novita, data_uri())
        assert answer.status_code == 429 and answer.json()["reason"] == "TOO_MANY_CONCURRENT_TASKS"
        assert answer.headers["Retry-After"] == "2" and len(novita.submissions) == 1


def test_slow_after_creates_the_task_then_loses_the_answer_to_a_client_timeout() -> None:
    with emulator("slow_after=1,slow_seconds=45", time_scale=0.02) as novita:  # a 45 s stall, 0.9 s here
        with pytest.raises(requests.exceptions.ReadTimeout):
            submit(novita, data_uri(), timeout=0.3)
        [paid] = novita.submissions  # created and billed while its answer was still held back
        assert paid["answer_delayed"] is True and paid["task_id"] in novita.tasks
        assert finished(novita, paid["task_id"])["task"]["status"] == "TASK_STATUS_SUCCEED"  # the work was done
        assert novita.requests_seen["slowed"] == 1


def test_slow_before_creation_costs_nothing_when_the_client_gives_up() -> None:
    with emulator("slow=1,slow_seconds=45", time_scale=0.01) as novita:  # 0.45 s
        with pytest.raises(requests.exceptions.ReadTimeout):
            submit(novita, data_uri(), timeout=0.15)
        time.sleep(0.6)
        assert novita.submissions == [] and novita.requests_seen["slowed"] == 1
        answer = submit(novita, data_uri(), timeout=3)  # a patient client gets its answer, late
        assert answer.status_code == 200 and len(novita.submissions) == 1


def test_the_time_scale_shrinks_the_timeline_and_the_eta_with_it() -> None:
    # 20 s queued + 40 s generating, at 0.05: 1 s + 2 s.
    with emulator(queue_seconds=20, generation_seconds=40, time_scale=0.05) as novita:
        started = time.monotonic()
        task_id = submit(novita, data_uri()).json()["task_id"]
        queued = result(novita, task_id)["task"]
        assert queued["status"] == "TASK_STATUS_QUEUED" and 2 < queued["eta"] <= 3
        processing = queued
        while processing["status"] == "TASK_STATUS_QUEUED" and time.monotonic() - started < 30:
            time.sleep(0.02)
            processing = result(novita, task_id)["task"]
        assert time.monotonic() - started >= 1  # 20 s queued, scaled
        if processing["status"] == "TASK_STATUS_PROCESSING":  # a loaded machine may look only once it is done
            assert 0 < float(processing["eta"]) <= 2
        done = finished(novita, task_id, timeout=30)
        # 60 s on the scale of 0.05 is 3 s: never sooner, and far from the unscaled 60 s however loaded the machine
        assert done["task"]["status"] == "TASK_STATUS_SUCCEED" and 2.9 < time.monotonic() - started < 30
        assert done["videos"][0]["video_url_ttl"] == "180"  # 3600 s on the same scale


def test_fail_and_expire_still_work_on_a_scaled_timeline() -> None:
    with emulator("fail=1", time_scale=0.1) as novita:
        failed = finished(novita, submit(novita, data_uri()).json()["task_id"])["task"]
        assert failed["status"] == "TASK_STATUS_FAILED" and failed["reason"]
    with emulator("expire=1", time_scale=0.1) as novita:
        task_id = submit(novita, data_uri()).json()["task_id"]
        first = finished(novita, task_id)["videos"][0]["video_url"]
        assert requests.get(first, timeout=5).status_code == 403
        assert requests.get(result(novita, task_id)["videos"][0]["video_url"], timeout=5).status_code == 200


# -- the spec ---------------------------------------------------------------------------------------


def test_the_spec_reads_old_and_new_names() -> None:
    faults = Faults.parse("429=0.2,5xx=0.1,slow=0.2,slow_seconds=45,slow_after=0.5,retry_after=30,fail=0.1,hang=0.05,dup=0.2,seed=7")
    assert (faults.rate_429, faults.slow_seconds, faults.slow_after, faults.retry_after, faults.retry_after_min, faults.seed) == (
        0.2,
        45,
        0.5,
        30,
        None,
        7,
    )
    assert (Faults.parse("retry_after=5-30").retry_after_min, Faults.parse("retry_after=5-30").retry_after) == (5, 30)
    assert Faults().retry_after == 1 and EmulatorConfig().time_scale == 1


@pytest.mark.parametrize("spec", ["nope=1", "slow=2", "slow_seconds=-1", "retry_after=30-5", "retry_after=x", "slow_seconds=nan"])
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(FaultSpecError):
        Faults.parse(spec)


def test_seconds_text() -> None:
    assert [seconds_text(v) for v in (1, 30 * 0.01, 3600 * 0.05, 0.0001, 2.5)] == ["1", "0.3", "180", "0", "2.5"]


def test_an_unknown_fault_lists_only_the_faults_a_user_can_name() -> None:
    with pytest.raises(FaultSpecError) as refused:
        Faults.parse("bogus=0.1")
    known = str(refused.value).split("known: ", 1)[1].split(", ")
    assert {"429", "5xx", "fail", "webhook_lost"} <= set(known)
    assert not [name for name in known if name.startswith("_")]  # it listed _NAMES and _DURATIONS
