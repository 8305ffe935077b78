"""The `img2video` command: run the real pipeline offline (demo, or your own images) and show it work."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)
from img2video.core.keys import IMAGE_SUFFIXES, SIDECAR_SUFFIXES
from rich.console import Console
from rich.live import Live
from rich.markup import escape as rich_escape
from rich.table import Table

from img2video_local import preflight
from img2video_local.commands import CommandError, Stack, local_state_path
from img2video_local.emulator import EmulatorConfig
from img2video_local.emulator_faults import Faults, FaultSpecError
from img2video_local.models_doc import print_models
from img2video_local.stack_cli import COMMANDS, add_commands
from img2video_local.stack_cli import run as run_stack_command

SAMPLES = Path(__file__).parent / "samples"
DEFAULT_OUT = Path("img2video-out")


@dataclass
class Upload:
    key: str
    path: Path | None = None
    data: bytes | None = None

    def read(self) -> bytes:
        return self.data if self.data is not None else self.path.read_bytes()  # type: ignore[union-attr]


@dataclass
class Plan:
    uploads: list[Upload] = field(default_factory=list)
    images: list[str] = field(default_factory=list)


class UsageError(Exception):
    pass


def plan_uploads(
    paths: list[Path],
    prefix: str,
    prompt: str | None,
    sidecar_fields: dict[str, Any] | None = None,
    force: bool = False,
    default_prompt: str = "",
    inline_only: bool = False,
    stack_settings: dict[str, str] | None = None,
) -> Plan:
    """What to upload: each image with its sidecar; folders recursively under incoming/<folder name>/.

    With `prompt`, every image gets a sidecar: a .txt holding the prompt, or with `sidecar_fields` (even empty) a
    .json holding the prompt and those fields. An image that has a sidecar of its own is refused (the prompt would
    be ignored), unless `force` replaces its sidecar. Then every upload is checked as the pipeline would check it
    (preflight.py): any problem, and nothing is uploaded."""
    plan = Plan()
    for path in paths:
        plan.uploads += _uploads_of(path, prefix)
    plan.images = [u.key for u in plan.uploads if u.key.lower().endswith(IMAGE_SUFFIXES)]
    if not plan.images:
        raise UsageError("no images found (.jpg, .jpeg, .png, .webp)")
    if prompt is not None:
        _replace_sidecars(plan, force)
        plan.uploads += _sidecars_for_the_rest(plan, prompt, sidecar_fields)
    candidates = [preflight.Candidate(u.key, u.read) for u in plan.uploads]
    found = preflight.problems(candidates, prefix, default_prompt, inline_only=inline_only, stack_settings=stack_settings)
    if found:
        raise UsageError("nothing was uploaded; the pipeline would refuse:\n  " + "\n  ".join(found))
    # sidecars first, so no image has to wait out the grace period for a sidecar that is on its way
    plan.uploads.sort(key=lambda u: u.key.lower().endswith(IMAGE_SUFFIXES))
    return plan


def _uploads_of(path: Path, prefix: str) -> list[Upload]:
    """A folder's images and sidecars (recursively, under its name), or one image with the sidecars beside it."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + SIDECAR_SUFFIXES)
        return [Upload(f"{prefix}{path.resolve().name}/{file.relative_to(path).as_posix()}", file) for file in files]
    if not path.is_file():
        raise UsageError(f"{path} does not exist")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise UsageError(f"{path} is not an image (.jpg, .jpeg, .png, .webp)")
    sidecars = [path.with_suffix(suffix) for suffix in SIDECAR_SUFFIXES]
    return [Upload(f"{prefix}{path.name}", path), *(Upload(f"{prefix}{s.name}", s) for s in sidecars if s.is_file())]


def _replace_sidecars(plan: Plan, force: bool) -> None:
    """With --prompt, the images that have a sidecar of their own: refused, or with `force` their sidecars left out."""
    sidecars = [u for u in plan.uploads if not u.key.lower().endswith(IMAGE_SUFFIXES)]
    stems = {image.rsplit(".", 1)[0] for image in plan.images}
    own = [u for u in sidecars if u.key.rsplit(".", 1)[0] in stems]
    if own and not force:
        raise UsageError(
            f"--prompt would be ignored for the images beside {', '.join(u.key for u in own)}: drop them without "
            "--prompt to use those sidecars, or add --force to replace them with one holding --prompt"
        )
    plan.uploads = [u for u in plan.uploads if u not in own]


def _sidecars_for_the_rest(plan: Plan, prompt: str, sidecar_fields: dict[str, Any] | None) -> list[Upload]:
    """A sidecar holding `prompt` (and `sidecar_fields`) for each image that has none."""
    if sidecar_fields is None:
        suffix, written = ".txt", prompt.encode("utf-8")
    else:
        suffix, written = ".json", json.dumps({"prompt": prompt, **sidecar_fields}, ensure_ascii=False).encode("utf-8")
    keys = {u.key for u in plan.uploads}
    stems = [image.rsplit(".", 1)[0] for image in plan.images]
    return [Upload(f"{stem}{suffix}", data=written) for stem in stems if not any(f"{stem}{known}" in keys for known in SIDECAR_SUFFIXES)]


class ProgressView:
    """One line per image: where its job is, live."""

    STAGES: ClassVar[dict[str, str]] = {
        "uploaded": "queued",
        "accepted": "accepted",
        "submitted": "submitted",
        "polling": "polling",
        "storing": "storing",
        "stored": "stored",
        "notified": "notified",
    }

    def __init__(self, images: list[str], console: Console) -> None:
        self.rows: dict[str, dict[str, str]] = {key: {"stage": "uploading", "detail": ""} for key in images}
        self.console = console
        self.started = time.monotonic()

    def update(self, key: str, stage: str, details: dict[str, Any]) -> None:
        row = self.rows.get(key)
        if row is None:
            return
        if stage == "polling":
            row["detail"] = f"{details.get('progress', 0):.0f}%"
        elif stage in ("accepted", "submitted"):
            row["detail"] = f"job {details.get('job_id')}"
        elif stage == "notified":
            error = details.get("error")
            row["detail"] = f"{error['code']}: {error['message']}" if error else details.get("event", "")
        if row["stage"] != "notified":
            row["stage"] = self.STAGES.get(stage, stage)

    def render(self) -> Table:
        table = Table(title=f"img2video local run  ({time.monotonic() - self.started:.1f} s)", expand=False)
        table.add_column("image")
        table.add_column("stage")
        table.add_column("detail", overflow="fold", max_width=80)
        for key, row in self.rows.items():
            style = "green" if "succeeded" in row["detail"] else "red" if row["stage"] == "notified" else ""
            table.add_row(key, row["stage"], row["detail"], style=style)
        return table


NOVITA_URL = "https://api.novita.ai"
# Only tests set this: where "--provider novita" sends its requests (the emulator, checking the same contract).
PROVIDER_URL_ENV = "IMG2VIDEO_NOVITA_URL"


def run_local(
    plan: Plan,
    out_dir: Path,
    as_json: bool,
    faults: Faults,
    timeout: float,
    emulator: EmulatorConfig | None = None,
    parameters: dict[str, str] | None = None,
    provider_key: str | None = None,
) -> int:
    from img2video_local.runtime import LocalPipeline

    stderr = Console(stderr=True)
    stdout = Console(soft_wrap=True)
    view = ProgressView(plan.images, stderr)
    config = emulator or EmulatorConfig()
    config.faults = faults
    with Live(view.render(), console=stderr, refresh_per_second=8, transient=False) as live:

        def on_progress(key: str, stage: str, details: dict[str, Any]) -> None:
            view.update(key, stage, details)
            live.update(view.render())

        with LocalPipeline(
            parameters=parameters or {},
            emulator_config=config,
            on_progress=on_progress,
            log_file=out_dir / "img2video-local.log",
            provider_url=(os.environ.get(PROVIDER_URL_ENV) or NOVITA_URL) if provider_key else None,
            provider_api_key=provider_key,
        ) as pipeline:
            for upload in plan.uploads:
                pipeline.upload(upload.key, upload.read())
            received = pipeline.wait_for_notices(set(plan.images), timeout)
            downloads = {r.notice["job_id"]: pipeline.download(r, out_dir) for r in received}
        live.update(view.render())
    stderr.line()  # the table's last line ends here, before anything is written to stdout

    notices_file = out_dir / "notices.jsonl"
    notices_file.parent.mkdir(parents=True, exist_ok=True)
    as_lines = "".join(json.dumps(r.notice, ensure_ascii=False) + "\n" for r in received)
    notices_file.write_text(as_lines, encoding="utf-8")
    if as_json:
        sys.stdout.write(as_lines)
    else:  # one line per job: the table above stays on screen; the whole notices are in notices.jsonl
        for r in received:
            stdout.print(_one_line(r.notice, downloads.get(r.notice["job_id"], [])), highlight=False)
    missing = set(plan.images) - {r.notice["source"]["key"] for r in received}
    for key in sorted(missing):
        stderr.print(f"[red]no notice for {key} within {timeout:.0f} s[/red]")
    succeeded = sum(1 for r in received if r.notice["event"] == "video.succeeded")
    if not as_json:
        summary = f"{succeeded} succeeded, {len(received) - succeeded} failed"
        summary += f", {len(missing)} without a notice" if missing else ""
        stdout.print(f"{summary}. Every notice, as JSON: {notices_file}", highlight=False)
    ok = not missing and succeeded == len(received)
    return 0 if ok else 1


def _one_line(notice: dict[str, Any], paths: list[Path]) -> str:
    source = notice["source"]["key"]
    if notice["event"] == "video.succeeded":
        video = next((path for path in paths if path.suffix == ".mp4"), None)
        size = notice["video"]["size_bytes"]
        return f"[green]ok[/green]      {source} -> {video or notice['video']['key']} ({size:,} bytes)"
    error = notice.get("error") or {}
    return f"[red]failed[/red]  {source}: {error.get('code', 'INTERNAL')}: {rich_escape(error.get('message', ''))}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="img2video",
        description="Drop images, follow, retry, cancel and fetch jobs of a deployed stack (--stack NAME) or of the embedded "
        "one (img2video local ...); or run the whole pipeline offline (demo, local run).",
    )
    parser.add_argument("--stack", help="the deployed stack's CloudFormation name (your usual AWS credentials and region)")
    parser.add_argument("--region", help="the deployed stack's region (default: your AWS configuration's)")
    commands = parser.add_subparsers(dest="command", required=True)
    add_commands(commands)
    demo = commands.add_parser("demo", help="animate the bundled sample image and write the MP4 under ./img2video-out/")
    demo.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where videos and manifests go (default ./img2video-out)")
    demo.add_argument("--json", action="store_true", help="print each notice as one JSON line, nothing else on stdout")
    models = commands.add_parser("models", help='the Novita models a sidecar may name with "model", and their fields')
    models.add_argument("model", nargs="?", help="only this model, with every field")
    models.add_argument("--json", action="store_true", help="one JSON object per model, one per line")
    local = commands.add_parser("local", help="local mode")
    local_commands = local.add_subparsers(dest="local_command", required=True)
    run = local_commands.add_parser("run", help="upload images (with their sidecars) and wait for every notice")
    run.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="an image (its .json/.txt sidecar beside it goes too) or a folder")
    run.add_argument("--prompt", help="the prompt for every image (uploaded as a .txt sidecar)")
    run.add_argument("--force", action="store_true", help="with --prompt: replace the sidecars beside the images")
    run.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where videos and manifests go (default ./img2video-out)")
    run.add_argument("--json", action="store_true", help="print each notice as one JSON line, nothing else on stdout")
    run.add_argument("--faults", default="", help='emulator faults, e.g. "429=0.3,5xx=0.1,fail=0.1,dup=0.5" (see README)')
    run.add_argument("--timeout", type=float, help="seconds to wait for all notices (default 300; 3600 with --provider novita)")
    run.add_argument("--generation-seconds", type=float, default=3.0, help="how long the emulator takes per video (default 3)")
    run.add_argument(
        "--provider",
        choices=("emulator", "novita"),
        default="emulator",
        help="novita: the real model, with your key from NOVITA_API_KEY (paid; images are sent inline; no AWS needed)",
    )
    up = local_commands.add_parser("up", help="keep a local stack running on loopback for the commands below and the AWS CLI")
    up.add_argument("--port", type=int, default=4599, help="loopback port of its AWS endpoint (default 4599; 0 picks one)")
    up.add_argument("--faults", default="", help="emulator faults, as for local run")
    up.add_argument("--generation-seconds", type=float, default=3.0, help="how long the emulator takes per video (default 3)")
    add_commands(local_commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")  # library warnings would only clutter the progress display
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _command(args)
    except (UsageError, FaultSpecError) as exc:
        parser.print_usage(sys.stderr)
        print(f"img2video: error: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        if exc.exit_code == 2:
            parser.print_usage(sys.stderr)
        print(f"img2video: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (BotoCoreError, ClientError) as exc:
        print(f"img2video: error: {aws_problem(exc)}", file=sys.stderr)
        return 1


def _command(args: argparse.Namespace) -> int:
    if args.command in COMMANDS:
        if not args.stack:
            raise UsageError(f"{args.command} needs --stack NAME (a deployed stack), or use `img2video local {args.command}`")
        return run_stack_command(Stack.deployed(args.stack, args.region), args)
    if args.command == "local" and args.local_command in COMMANDS:
        args.command = args.local_command
        return run_stack_command(Stack.embedded(), args)
    if args.command == "local" and args.local_command == "up":
        return _local_up(args)
    if args.command == "models":
        return print_models(args.model, args.json)
    if args.command == "demo":
        plan = plan_uploads([SAMPLES / "sunset.jpg"], "incoming/demo/", None)
        return run_local(plan, args.out, args.json, Faults(), timeout=120)
    return _local_run(args)


def _local_run(args: argparse.Namespace) -> int:
    faults = Faults.parse(args.faults)
    key = None
    if args.provider == "novita":
        key = os.environ.get("NOVITA_API_KEY", "").strip()
        if not key:
            raise UsageError(
                "--provider novita sends your images to Novita's real API and needs your API key: "
                "export NOVITA_API_KEY=... (from https://novita.ai/settings/key-management); each video is billed to it"
            )
        if args.faults:
            raise UsageError("--faults are the emulator's; they cannot be injected into Novita's real API")
    # the real Novita cannot fetch from this machine: only models that take inline images can be run this way
    plan = plan_uploads(args.paths, "incoming/", args.prompt, force=args.force, inline_only=key is not None)
    emulator = EmulatorConfig(generation_seconds=args.generation_seconds)
    timeout = args.timeout or (3600.0 if key else 300.0)  # a real video takes minutes
    return run_local(plan, args.out, args.json, faults, timeout, emulator, provider_key=key)


def aws_problem(exc: BotoCoreError | ClientError) -> str:
    """What went wrong with AWS, in one line, with the fix."""
    if isinstance(exc, NoRegionError):
        return "no AWS region: give --region REGION, or set AWS_DEFAULT_REGION (`aws configure` sets a default)"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return "no AWS credentials: run `aws configure` (or `aws sso login`), or set AWS_PROFILE to a profile that has them"
    if isinstance(exc, EndpointConnectionError):
        return f"could not reach AWS at {exc.kwargs.get('endpoint_url', 'its endpoint')}: check the network and the region"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        operation = getattr(exc, "operation_name", "the call")
        return f"AWS refused {operation}: {error.get('Code', 'an error')}: {error.get('Message', '')}".rstrip(": ")
    return f"AWS: {exc}"


def _local_up(args: argparse.Namespace) -> int:
    """Run until Ctrl-C: the embedded stack, served on loopback, its coordinates in the local state file."""
    from img2video_local.runtime import LocalPipeline
    from img2video_local.up import claim_port, describe, serving

    claim_port(args.port)
    config = EmulatorConfig(generation_seconds=args.generation_seconds, faults=Faults.parse(args.faults))
    stop = threading.Event()
    with (
        LocalPipeline(emulator_config=config, log_file=DEFAULT_OUT / "img2video-local.log") as pipeline,
        serving(pipeline, args.port) as stack,
    ):
        state_file = local_state_path()
        stack.save(state_file)
        print(describe(stack, pipeline.stack.id("NoticesTopic")), file=sys.stderr, flush=True)
        signal.signal(signal.SIGTERM, lambda number, frame: stop.set())  # `kill` stops it as Ctrl-C does
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            state_file.unlink(missing_ok=True)
            print("img2video local stack stopped.", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
