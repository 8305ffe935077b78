"""The `img2video` command as a user runs it: exit codes, --json output, files written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from img2video_local.cli import UsageError, main, plan_uploads
from img2video_local.emulator import EmulatorConfig, NovitaEmulator

from tests.conftest import jpeg_bytes

pytestmark = pytest.mark.integration


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "trip").mkdir(parents=True)
    (folder / "cat.jpg").write_bytes(jpeg_bytes())
    (folder / "cat.json").write_text(json.dumps({"prompt": "the cat blinks", "duration": 1, "resolution": "540p"}))
    (folder / "trip" / "hill top.png").write_bytes(jpeg_bytes(160, 128))  # no sidecar: --prompt covers it
    (folder / "notes.md").write_text("not an upload")
    return folder


def test_plan_keeps_folders_and_gives_every_image_the_prompt_replacing_sidecars_only_when_forced(photos: Path) -> None:
    with pytest.raises(UsageError, match=r"--prompt would be ignored for the images beside incoming/photos/cat\.json.*--force"):
        plan_uploads([photos], "incoming/", "drift slowly")  # it used to be ignored for cat.jpg, silently
    plan = plan_uploads([photos], "incoming/", "drift slowly", force=True)
    keys = [u.key for u in plan.uploads]
    assert set(plan.images) == {"incoming/photos/cat.jpg", "incoming/photos/trip/hill top.png"}
    assert {"incoming/photos/trip/hill top.txt", "incoming/photos/cat.txt"} <= set(keys) and "incoming/photos/cat.json" not in keys
    assert all(not k.endswith(".md") for k in keys)
    assert keys.index("incoming/photos/cat.txt") < keys.index("incoming/photos/cat.jpg")  # sidecars go first


def test_the_plan_refuses_what_the_pipeline_would_refuse_naming_every_problem(photos: Path) -> None:
    """Checked before anything is uploaded, with the pipeline's own rules: it used to upload, then fail seconds later."""
    with pytest.raises(UsageError) as refused:
        plan_uploads([photos], "incoming/", None)
    assert "incoming/photos/trip/hill top.png has no sidecar" in str(refused.value) and "give --prompt" in str(refused.value)
    assert plan_uploads([photos], "incoming/", None, default_prompt="a stack's default").images  # a DefaultPrompt covers it

    with pytest.raises(UsageError) as refused:
        plan_uploads([photos / "trip"], "incoming/", "p", {"resolution": "4k", "duration": 12})
    message = str(refused.value)
    assert message.startswith("nothing was uploaded") and "INVALID_SIDECAR" in message
    assert '"resolution"' in message and '"duration"' in message  # both problems, at once
    (photos / "trip" / "blank.png").write_bytes(b"")
    with pytest.raises(UsageError, match=r"UNSUPPORTED_IMAGE: incoming/trip/blank\.png is empty"):
        plan_uploads([photos / "trip"], "incoming/", "p")


def test_local_run_json_prints_one_notice_per_line_and_writes_videos(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["local", "run", str(photos), "--prompt", "drift slowly", "--force", "--json", "--out", str(out), "--generation-seconds", "1"]
    code = main(argv)
    stdout = capsys.readouterr().out
    lines = stdout.splitlines()
    assert code == 0
    notices = [json.loads(line) for line in lines]  # every line is JSON, nothing else on stdout
    assert len(notices) == 2 and {n["event"] for n in notices} == {"video.succeeded"}
    assert (out / "photos" / "cat.mp4").stat().st_size > 0 and (out / "photos" / "cat.json").exists()
    assert (out / "photos" / "trip" / "hill top.mp4").exists()


def test_local_run_exits_1_when_a_job_fails(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["local", "run", str(photos / "cat.jpg"), "--json", "--faults", "fail=1", "--out", str(tmp_path / "o"), "--generation-seconds", "1"]
    )
    [notice] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1 and notice["error"]["code"] == "PROVIDER_FAILED"


@pytest.mark.parametrize(
    "argv",
    [
        ["local", "run", "/nonexistent/cat.jpg"],
        ["local", "run", "{photos}/notes.md"],
        ["local", "run", "{photos}/cat.jpg", "--faults", "lightning=1"],
        ["local", "run", "{photos}/cat.jpg", "--faults", "429=2"],
        ["local", "bogus"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.format(photos=photos.parent / "photos") for a in argv]
    with pytest.raises(SystemExit) as caught:
        raise SystemExit(main(args))
    assert caught.value.code == 2
    assert capsys.readouterr().out == ""


def test_demo_writes_a_playable_mp4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import av

    assert main(["demo", "--out", str(tmp_path)]) == 0
    video = tmp_path / "demo" / "sunset.mp4"
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and min(stream.width, stream.height) == 720
    stdout = capsys.readouterr().out
    # one line per job and a closing count, so the progress table above stays on screen; the notices are in a file
    assert stdout.splitlines()[-1].startswith("1 succeeded, 0 failed.") and len(stdout.splitlines()) == 2
    [notice] = [json.loads(line) for line in (tmp_path / "notices.jsonl").read_text().splitlines()]
    assert notice["event"] == "video.succeeded"


def test_local_run_with_the_real_provider_needs_the_key_and_sends_images_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--provider novita`: the real API with the user's key and no AWS; here the emulator stands in for Novita."""
    image = tmp_path / "pic.jpg"
    image.write_bytes(jpeg_bytes())
    monkeypatch.delenv("NOVITA_API_KEY", raising=False)
    assert main(["local", "run", str(image), "--prompt", "p", "--provider", "novita"]) == 2
    assert "needs your API key: export NOVITA_API_KEY" in capsys.readouterr().err

    stand_in = NovitaEmulator(EmulatorConfig(api_key="sk-users-own-key", generation_seconds=1, fps=8))
    monkeypatch.setenv("IMG2VIDEO_NOVITA_URL", stand_in.start())
    monkeypatch.setenv("NOVITA_API_KEY", "sk-users-own-key")
    (tmp_path / "kling.jpg").write_bytes(jpeg_bytes(640, 400))
    (tmp_path / "kling.json").write_text(json.dumps({"prompt": "p", "model": "kling-2.5-turbo-i2v"}))
    assert main(["local", "run", str(tmp_path / "kling.jpg"), "--provider", "novita"]) == 2  # it would fetch a loopback URL
    assert "kling-2.5-turbo-i2v takes images by URL only, and Novita cannot fetch them from this machine" in capsys.readouterr().err
    assert stand_in.submissions == []
    try:
        code = main(["local", "run", str(image), "--prompt", "p", "--provider", "novita", "--out", str(tmp_path / "out"), "--json"])
    finally:
        stand_in.stop()
    [notice] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and notice["event"] == "video.succeeded", notice
    [submitted] = stand_in.submissions
    assert submitted["image"].startswith("data:")  # inline: Novita cannot fetch from this machine
    assert all("extra" not in task.body for task in stand_in.tasks.values())  # nor call a webhook on it
    assert (tmp_path / "out" / "pic.mp4").exists()


def test_models_lists_every_model_and_one_models_fields(capsys: pytest.CaptureFixture[str]) -> None:
    from img2video.core.registry import MODELS

    assert main(["models", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [m["model"] for m in listed] == list(MODELS) and sum(m["default"] for m in listed) == 1
    assert main(["models", "wan2.6-i2v"]) == 0
    shown = capsys.readouterr().out
    assert "parameters.shot_type" in shown and "no_alpha" not in shown and "without transparency" in shown
    assert main(["models", "seedance"]) == 2
    assert "did you mean seedance-v1-pro-i2v or seedance-v1.5-pro-i2v?" in capsys.readouterr().err


def test_the_check_before_upload_judges_a_sidecar_by_the_stacks_own_model_settings(photos: Path) -> None:
    """A stack deployed with DefaultModel=wan2.6-i2v refuses a 3000-pixel image; one limited by AllowedModels refuses
    a sidecar naming another model: drop says so before uploading, as that stack's Accept would."""
    big = photos / "wide.jpg"
    big.write_bytes(jpeg_bytes(3000, 2000))
    (photos / "wide.json").write_text(json.dumps({"prompt": "p"}))
    assert plan_uploads([big], "incoming/", None).uploads  # the default model takes it
    with pytest.raises(UsageError, match=r"wan2\.6-i2v takes images 360 to 2000 pixels"):
        plan_uploads([big], "incoming/", None, stack_settings={"default_model": "wan2.6-i2v"})
    (photos / "wide.json").write_text(json.dumps({"prompt": "p", "model": "kling-2.5-turbo-i2v"}))
    with pytest.raises(UsageError, match=r"is not allowed on this stack \(AllowedModels: vidu-q2-turbo-img2video\)"):
        plan_uploads([big], "incoming/", None, stack_settings={"allowed_models": "vidu-q2-turbo-img2video"})
