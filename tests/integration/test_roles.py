"""Every job finishes under the roles the stack really has: local mode enforces IAM as AWS would, so a missing grant
fails here as it would on AWS (each test below removes one grant the stack once lacked, and sees the defect)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from img2video_local.emulator import EmulatorConfig
from img2video_local.emulator_faults import Faults
from img2video_local.runtime import LocalPipeline
from img2video_local.template import TEMPLATE_PATH

from tests.conftest import API_KEY, jpeg_bytes
from tests.integration.test_pipeline import FAST, run_jobs, wait_until

pytestmark = pytest.mark.integration

SIDECAR = json.dumps({"prompt": "waves roll in", "duration": 2, "resolution": "540p"}).encode()
STORE_LISTS = """            - Sid: ListVideos  # without it S3 answers HeadObject of a video not stored yet with 403, not 404
              Effect: Allow
              Action: s3:ListBucket
              Resource: !GetAtt OutputBucket.Arn
"""
PUBLISH_LISTS = """            - Sid: ListVideos  # without it S3 answers a manifest that does not exist (a failed job's) with 403, not 404
              Effect: Allow
              Action: s3:ListBucket
              Resource: !GetAtt OutputBucket.Arn
"""


def without(tmp_path: Path, grant: str) -> Path:
    text = TEMPLATE_PATH.read_text(encoding="utf-8")
    assert grant in text
    path = tmp_path / "template.yaml"
    path.write_text(text.replace(grant, ""), encoding="utf-8")
    return path


def test_a_job_succeeds_with_every_call_checked_against_its_role_and_none_denied() -> None:
    config = EmulatorConfig(api_key=API_KEY, **FAST)
    with LocalPipeline(emulator_config=config) as local:
        [received] = run_jobs(local, [("incoming/r/sea.json", SIDECAR), ("incoming/r/sea.jpg", jpeg_bytes())], {"incoming/r/sea.jpg"})
        assert received.notice["event"] == "video.succeeded"
        # the state machine's own calls (the submit message, the Lambda invocations, the wait's token) were checked too
        acting = {name for name, _ in local.stack.policies.used}
        assert any(name.startswith("VideoJobStateMachineRole/") for name in acting)
        assert local.stack.policies.checked > 20 and local.stack.policies.denials == []


def test_without_list_bucket_store_meets_s3s_403_and_the_paid_video_is_lost(tmp_path: Path) -> None:
    # The stack as it was: Store's HeadObject of a video not stored yet is 403 (not 404), and the job fails INTERNAL
    config = EmulatorConfig(api_key=API_KEY, **FAST)
    with LocalPipeline(emulator_config=config, template_path=without(tmp_path, STORE_LISTS)) as local:
        [received] = run_jobs(local, [("incoming/r/lost.json", SIDECAR), ("incoming/r/lost.jpg", jpeg_bytes())], {"incoming/r/lost.jpg"})
        assert received.notice["error"]["code"] == "INTERNAL" and received.notice["error"]["stage"] == "store"
        assert "403" in received.notice["error"]["message"]
        assert ("StoreFunction", "s3:ListBucket", f"arn:aws:s3:::{local.output_bucket}") in local.stack.policies.denials
        assert len(local.emulator.submissions) == 1  # paid for


def test_without_list_bucket_a_cancelled_job_never_gets_its_notice_from_the_backstop(tmp_path: Path) -> None:
    # The stack as it was: the backstop reads the manifest of a job that has none, S3 answers 403, and the cancelled
    # job's CANCELLED notice never comes; the backstop's failure lands on its queue (and the alarm on it)
    config = EmulatorConfig(api_key=API_KEY, **FAST, faults=Faults.parse("hang=1"))
    with LocalPipeline(emulator_config=config, template_path=without(tmp_path, PUBLISH_LISTS), time_scale=0.05) as local:
        local.upload("incoming/r/stop.json", SIDECAR)
        local.upload("incoming/r/stop.jpg", jpeg_bytes())
        machine = local.stack.id("VideoJobStateMachine")
        executions = wait_until(lambda: local.sfn.list_executions(stateMachineArn=machine)["executions"], 60)
        # one upload pair is one job; seen twice once under heavy load (not understood yet): say what there was
        assert len(executions) == 1, [(e["name"], e["status"]) for e in executions]
        [execution] = executions
        wait_until(lambda: local.emulator.submissions, 60)
        local.sfn.stop_execution(executionArn=execution["executionArn"])
        queue = local.stack.id("BackstopFailureQueue")
        kept = wait_until(lambda: local.sqs.receive_message(QueueUrl=queue).get("Messages", []), 120)
        assert kept, "the backstop never failed: was the grant still there?"
        assert "AccessDenied" in kept[0]["Body"] and local.notices == []
