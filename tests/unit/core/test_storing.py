"""Store's decisions on what S3 already holds after an earlier try: its own work is kept, another job's replaced."""

from __future__ import annotations

from img2video.core.storing import StoredVideo, is_this_jobs_video, vouched_by_manifest


def test_only_the_video_written_for_this_job_and_task_counts_as_stored() -> None:
    assert is_this_jobs_video({"job-id": "j", "task-id": "t"}, "j", "t")
    assert not is_this_jobs_video({"job-id": "j", "task-id": "older"}, "j", "t")  # a task of an earlier attempt
    assert not is_this_jobs_video({"job-id": "other"}, "j", "t")
    assert not is_this_jobs_video({}, "j", "t")  # a video the user put there


def test_a_manifest_vouches_for_the_video_only_when_it_is_this_jobs_and_matches_the_object() -> None:
    manifest = {"job_id": "j", "video": {"size_bytes": 10, "sha256": "ab"}}
    assert vouched_by_manifest(manifest, "j", 10) == StoredVideo(10, "ab")
    assert vouched_by_manifest(manifest, "j", 11) is None  # the object changed since: hash it again
    assert vouched_by_manifest({**manifest, "job_id": "k"}, "j", 10) is None
    assert vouched_by_manifest({"job_id": "j", "video": {"size_bytes": 10}}, "j", 10) is None
