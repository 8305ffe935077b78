"""Chaos run: many jobs under random mixed faults, then check every promise of docs/design.md, section 3 against the evidence."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from img2video_local.emulator import EmulatorConfig
from img2video_local.emulator_faults import Faults
from img2video_local.runtime import LocalPipeline

DEFAULT_FAULTS = "429=0.15,5xx=0.08,slow=0.1,slow_seconds=0.3,fail=0.1,hang=0.05,expire=0.15,truncate=0.15,dup=0.25"
# AWS's own faults, in every function's calls: failures after botocore's retries, and answers lost after the work was done.
DEFAULT_AWS_FAULTS = (
    "*:s3.*:rate=0.02;*:sns.Publish:rate=0.05;*:sns.Publish:lost-rate=0.03;*:dynamodb.*:rate=0.02;"
    "*:stepfunctions.*:rate=0.02;*:stepfunctions.SendTaskSuccess:lost-rate=0.05;*:secretsmanager.*:rate=0.05;*:sqs.SendMessage:rate=0.02;"
    "*:s3.CompleteMultipartUpload:lost-rate=0.05;"
    # runtimes that die right after the work was done (Lambda reports Runtime.ExitError)
    "StoreFunction:s3.CompleteMultipartUpload:exit-rate=0.03;PublishFunction:sns.Publish:exit-rate=0.02"
)
# Beyond these, every chaos run meets what moto lacks: DynamoDB transactions cancelled for conflicts and throttling
# (the dynamodb.* faults on TransactWriteItems), and functions' SQS short polls that come back empty.
# Local parameters for a chaos run: hung tasks give up after 20 s, and a missing sidecar after 3 s.
CHAOS_PARAMETERS = {"SidecarGraceSeconds": "3", "PollMaxSeconds": "3"}
CHAOS_ENVIRONMENT = {"MAX_WAIT_MINUTES": "0.34"}  # under the template's minimum of a minute: hung tasks time out sooner
BAD_SIDECAR = b'{"prompt": "x", "durration": 5}'


@dataclass
class JobPlan:
    image_key: str
    sidecar_key: str | None
    image: bytes
    sidecar: bytes | None
    sidecar_first: bool
    expect: str  # "provider" (decided by the emulator's fate) or a fixed error code


@dataclass
class ChaosReport:
    jobs: int
    seconds: float
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    checks: dict[str, tuple[int, int]] = field(default_factory=dict)  # name → (passed, total)
    emulator: dict[str, int] = field(default_factory=dict)
    aws_faults: Counter[str] = field(default_factory=Counter)  # "service.Operation mode" → times it fired
    deliveries: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def table(self) -> str:
        lines = [f"chaos run: {self.jobs} jobs in {self.seconds:.1f} s", "", f"{'check':<58} {'passed':>8} {'of':>6}", "-" * 74]
        for name, (passed, total) in self.checks.items():
            lines.append(f"{name:<58} {passed:>8} {total:>6}" + ("" if passed == total else "   FAIL"))
        lines += ["", f"{'outcome':<40} {'jobs':>6}", "-" * 47]
        lines += [f"{name:<40} {count:>6}" for name, count in sorted(self.outcomes.items())]
        lines += ["", "emulator: " + ", ".join(f"{k}={v}" for k, v in self.emulator.items())]
        lines += [f"notice deliveries: {self.deliveries} for {self.jobs} jobs (a lost publish answer re-sends the same notice)"]
        if self.aws_faults:
            lines += ["", f"{'AWS fault fired':<58} {'times':>6}", "-" * 65]
            lines += [f"{name:<58} {count:>6}" for name, count in sorted(self.aws_faults.items())]
        if self.violations:
            lines += ["", "VIOLATIONS:"] + [f"  - {v}" for v in self.violations[:50]]
        return "\n".join(lines)


def _image(rng: random.Random) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    color = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    Image.new("RGB", (rng.choice([160, 192, 256]), rng.choice([128, 144, 192])), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def plan_jobs(count: int, rng: random.Random) -> list[JobPlan]:
    plans = []
    for index in range(count):
        folder = rng.choice(["", "a/", "deep/er/", "with space/", "ünï/"])
        image_key = f"incoming/chaos/{folder}img {index:04d}+x.jpg"
        stem = image_key.rsplit(".", 1)[0]
        roll = rng.random()
        if roll < 0.04:  # the sidecar never comes
            plans.append(JobPlan(image_key, None, _image(rng), None, False, "MISSING_SIDECAR"))
            continue
        if roll < 0.08:
            plans.append(JobPlan(image_key, f"{stem}.json", _image(rng), BAD_SIDECAR, rng.random() < 0.5, "INVALID_SIDECAR"))
            continue
        prompt = f"chaos job {index}"
        body = {"prompt": prompt, "duration": 1, "resolution": "540p"}
        if rng.random() < 0.5:
            plans.append(JobPlan(image_key, f"{stem}.json", _image(rng), json.dumps(body).encode(), rng.random() < 0.5, "provider"))
        else:
            plans.append(JobPlan(image_key, f"{stem}.txt", _image(rng), prompt.encode(), rng.random() < 0.5, "provider"))
    return plans


def _video_key_of(local: LocalPipeline, notice: dict[str, Any]) -> str:
    """Where the job's video would be: the execution input names it (jobs refused at acceptance have none)."""
    try:
        arn = f"{local.stack.id('VideoJobStateMachine').replace(':stateMachine:', ':execution:')}:{notice['job_id']}"
        return str(json.loads(local.sfn.describe_execution(executionArn=arn)["input"])["job"]["video_key"])
    except Exception:
        return ""


def _check(report: ChaosReport, name: str, results: list[tuple[bool, str]]) -> None:
    report.checks[name] = (sum(ok for ok, _ in results), len(results))
    report.violations += [f"{name}: {why}" for ok, why in results if not ok]


def run_chaos(
    jobs: int = 200, seed: int = 7, faults: str = DEFAULT_FAULTS, timeout: float = 600, aws_faults: str = DEFAULT_AWS_FAULTS
) -> ChaosReport:
    rng = random.Random(seed)
    plans = plan_jobs(jobs, rng)
    config = EmulatorConfig(generation_seconds=2, queue_seconds=0.5, fps=4, render_workers=2, faults=Faults.parse(f"{faults},seed={seed}"))
    started = time.monotonic()
    with LocalPipeline(
        parameters=CHAOS_PARAMETERS, environment=CHAOS_ENVIRONMENT, emulator_config=config, aws_faults=aws_faults, aws_faults_seed=seed
    ) as local:
        uploads: list[tuple[str, bytes]] = []
        for plan in plans:
            pair = [(plan.image_key, plan.image)]
            if plan.sidecar_key and plan.sidecar is not None:
                pair = [(plan.sidecar_key, plan.sidecar), *pair] if plan.sidecar_first else [*pair, (plan.sidecar_key, plan.sidecar)]
            uploads += pair
        etags = {}
        for key, data in uploads:
            local.upload(key, data)
            etags[key] = hashlib.md5(data).hexdigest()
        expected = {p.image_key for p in plans}
        local.wait_for_notices(expected, timeout)
        local.wait_for_notices({"(late duplicates)"}, 5)  # a second notice for any job would arrive by now
        report = ChaosReport(jobs=jobs, seconds=time.monotonic() - started)
        _verify(report, local, plans, uploads, etags)
        for (_function, call, mode), count in local.faults.fired.items():
            report.aws_faults[f"{call} {mode}"] += count
    return report


def _verify(
    report: ChaosReport, local: LocalPipeline, plans: list[JobPlan], uploads: list[tuple[str, bytes]], etags: dict[str, str]
) -> None:
    notices: dict[str, list[dict[str, Any]]] = {}
    report.deliveries = len(local.notices)
    for received in local.notices:  # one per notice_id: a publish whose answer was lost re-sends the very same notice
        same = [n for n in notices.get(received.notice["source"]["key"], []) if n["notice_id"] == received.notice["notice_id"]]
        if same and same[0] != received.notice:
            report.violations.append(f"{received.notice['notice_id']} was delivered with different contents")
        if not same:
            notices.setdefault(received.notice["source"]["key"], []).append(received.notice)
    _check(
        report,
        "every job has exactly one terminal notice",
        [(len(notices.get(p.image_key, [])) == 1, f"{p.image_key}: {len(notices.get(p.image_key, []))} notices") for p in plans],
    )
    stored_keys = {item["Key"] for item in local.s3.list_objects_v2(Bucket=local.output_bucket).get("Contents", [])}
    _check(
        report,
        "no stored video was reported as failed",
        [
            (
                not (n["event"] == "video.failed" and (n.get("request") or {}) and _video_key_of(local, n) in stored_keys),
                f"{key}: stored, yet failed",
            )
            for key, found in notices.items()
            for n in found
        ],
    )

    submissions = Counter(unquote(s["image"].split("/", 1)[1]) for s in local.emulator.submissions)
    fates = {unquote(s["image"].split("/", 1)[1]): s["fate"] for s in local.emulator.submissions}
    _check(
        report,
        "no job was submitted to the provider twice",
        [(submissions[p.image_key] <= 1, f"{p.image_key} submitted {submissions[p.image_key]} times") for p in plans],
    )

    wrong_code = []
    for plan in plans:
        got = notices.get(plan.image_key, [{}])[0]
        if plan.expect == "provider":
            fate = fates.get(plan.image_key)
            want = {"succeed": "video.succeeded", "fail": "PROVIDER_FAILED", "hang": "PROVIDER_TIMEOUT"}.get(fate or "", "submitted")
        else:
            want = plan.expect
        code = (got.get("error") or {}).get("code") or got.get("event", "none")
        report.outcomes[code] += 1
        wrong_code.append((code == want, f"{plan.image_key}: expected {want}, got {code}: {(got.get('error') or {}).get('message')}"))
    _check(report, "every notice has the outcome the faults call for", wrong_code)

    stored = []
    for plan in plans:
        for notice in notices.get(plan.image_key, []):
            if notice["event"] != "video.succeeded":
                continue
            video = notice["video"]
            data = local.s3.get_object(Bucket=video["bucket"], Key=video["key"])["Body"].read()
            manifest = json.loads(local.s3.get_object(Bucket=video["bucket"], Key=video["key"][:-4] + ".json")["Body"].read())
            served = local.emulator.served_videos.get(notice["task_id"], b"")
            digest = hashlib.sha256(data).hexdigest()
            stored.append(
                (
                    digest == manifest["video"]["sha256"] == notice["video"]["sha256"] and data == served,
                    f"{plan.image_key}: stored video differs from manifest or from what the emulator served",
                )
            )
    _check(report, "every stored video matches its manifest and the served bytes", stored)

    intact = []
    for key, data in uploads:
        try:
            head = local.s3.head_object(Bucket=local.input_bucket, Key=key)
            intact.append((head["ETag"].strip('"') == etags[key] and head["ContentLength"] == len(data), f"{key} changed"))
        except Exception as exc:
            intact.append((False, f"{key} missing: {exc}"))
    _check(report, "no input object was deleted or changed", intact)
    report.emulator = {
        "tasks": len(local.emulator.submissions),
        **local.emulator.requests_seen,
        "duplicated_s3_events": len(local.event_keys) - len({k for k in local.event_keys}),
    }
