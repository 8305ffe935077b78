"""The job lifecycle a user lives with: a re-upload is a new attempt, the jobs table, cancel, the daily limit."""

from __future__ import annotations

import pytest

from tests.conftest import jpeg_bytes
from tests.integration.test_pipeline import only, pipeline, run_jobs, sidecar, wait_until

pytestmark = pytest.mark.integration


def test_uploading_the_same_files_again_after_a_failure_is_a_new_attempt_with_its_own_notice() -> None:
    image, prompt = jpeg_bytes(), sidecar()
    with pipeline(faults="fail=1") as local:
        first = only(run_jobs(local, [("incoming/r/cat.json", prompt), ("incoming/r/cat.jpg", image)], {"incoming/r/cat.jpg"}))
        assert first["event"] == "video.failed" and first["attempt"] == 1
        local.emulator.config.faults.fail = 0  # the user fixed the cause (say, topped up the balance)
        local.upload("incoming/r/cat.jpg", image)  # the very same bytes: the same ETag
        local.upload("incoming/r/cat.json", prompt)
        second = wait_until(lambda: [r.notice for r in local.notices if r.notice["event"] == "video.succeeded"], 60)
        assert len(second) == 1, "a re-upload after a failure was silently ignored"
        assert second[0]["job_id"] != first["job_id"] and second[0]["attempt"] == 2
        local.wait_for_notices({"never"}, 2)  # the image's and the sidecar's events converge on one new job
        assert len(local.notices) == 2 and len(local.emulator.submissions) == 2
        manifest = local.s3.get_object(Bucket=local.output_bucket, Key="videos/r/cat.json")["Body"].read()
        assert b'"attempt": 2' in manifest
