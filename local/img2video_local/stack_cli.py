"""The stack commands of the `img2video` CLI: the same for a deployed stack (`--stack NAME`) and the embedded one
(`img2video local ...`, served by `img2video local up`). stdout carries results and tables, whole however wide they
are when stdout is not a terminal, so `jobs | grep` finds a job (with --json, one JSON object per line and nothing
else); live progress and notes go to stderr. Exit codes: 0, 1 (a job failed or was not found), 2 (usage)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from img2video_local import commands
from img2video_local.commands import STATES, TERMINAL, CommandError, Stack
from img2video_local.connect_bucket import connect

SIDECAR_OPTIONS: dict[str, type] = {
    "model": str,
    "duration": int,
    "resolution": str,
    "movement_amplitude": str,
    "seed": int,
    "voice_id": str,
    "output_name": str,
}
SIDECAR_FLAGS = ("bgm", "audio", "watermark", "off_peak")
JOB_ID_WAIT_SECONDS = 120.0  # how long drop and retry wait for Accept to name the new jobs
COLUMNS = ("job_id", "attempt", "state", "source_key", "model", "progress_percent", "polls", "error_code", "updated_at")


def add_commands(subparsers: Any) -> None:
    """drop, status, jobs, watch, retry, cancel, fetch: added to the top level (with --stack) and under `local`."""
    drop = subparsers.add_parser("drop", help="upload images with their sidecars (the pipeline starts a job for each)")
    drop.add_argument("files", nargs="+", type=Path, metavar="FILE", help="an image; a .json/.txt sidecar beside it goes too")
    drop.add_argument("--prompt", help="write a sidecar with this prompt (and the fields below) for every image")
    drop.add_argument("--force", action="store_true", help="with --prompt: replace the sidecars beside the images")
    for name, kind in SIDECAR_OPTIONS.items():
        drop.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, help=f'sidecar field "{name}" (with --prompt)')
    for name in SIDECAR_FLAGS:
        drop.add_argument(f"--{name.replace('_', '-')}", dest=name, action="store_true", help=f'sidecar field "{name}": true')
    drop.add_argument("--folder", default="", help="the folder under the input prefix (default: the top)")
    drop.add_argument("--wait", action="store_true", help="then watch the new jobs until their notices")
    drop.add_argument("--timeout", type=float, default=900, help="with --wait: seconds to wait (default 900)")
    status = subparsers.add_parser("status", help="one job, or every attempt of an image key")
    status.add_argument("job", metavar="JOB|KEY")
    jobs = subparsers.add_parser("jobs", help="jobs by state (queries, never scans)")
    jobs.add_argument("--state", choices=STATES, action="append", help="only this state (repeatable; default: all)")
    jobs.add_argument("--since", help="updated since: 30m, 2h, 1d, or an ISO date/time (UTC)")
    watch = subparsers.add_parser("watch", help="a live table until the given jobs (default: all unfinished) have their notices")
    watch.add_argument("job_ids", nargs="*", metavar="JOB")
    watch.add_argument("--timeout", type=float, default=900, help="seconds to wait (default 900)")
    retry = subparsers.add_parser("retry", help="a new attempt: the image uploaded again, as it is")
    retry.add_argument("job", nargs="?", metavar="JOB")
    retry.add_argument("--failed", action="store_true", help="every image whose latest attempt failed")
    retry.add_argument("--since", help="with --failed: failed since 30m, 2h, 1d, or an ISO date/time")
    cancel = subparsers.add_parser("cancel", help="stop a job; its one notice says CANCELLED (never paid if not yet submitted)")
    cancel.add_argument("job", metavar="JOB")
    fetch = subparsers.add_parser("fetch", help="download a job's video and manifest and print a fresh link")
    fetch.add_argument("job", metavar="JOB|KEY")
    fetch.add_argument("--out", type=Path, default=Path("img2video-out"), help="folder (default ./img2video-out)")
    connect = subparsers.add_parser(
        "connect-bucket", help="turn on EventBridge for an existing input bucket (ExistingInputBucket), keeping its other notifications"
    )
    connect.add_argument("bucket", metavar="BUCKET")
    batch = subparsers.add_parser("batch", help="batch manifests: `batch status MANIFEST` shows a batch's progress")
    batch_commands = batch.add_subparsers(dest="batch_command", required=True, metavar="status")
    batch_status = batch_commands.add_parser("status", help="the newest batch of a manifest: lines ended, by outcome, failed lines")
    batch_status.add_argument("manifest", metavar="MANIFEST", help="its key (under the input prefix or not) or s3://bucket/key")
    for parser in (drop, status, jobs, watch, retry, cancel, fetch, connect, batch_status):
        parser.add_argument("--json", action="store_true", help="one JSON object per line on stdout, nothing else")


COMMANDS = ("drop", "status", "jobs", "watch", "retry", "cancel", "fetch", "connect-bucket", "batch")


def run(stack: Stack, args: argparse.Namespace) -> int:
    out = Output(args.json)
    handler = globals()[f"_{args.command.replace('-', '_')}"]
    code: int = handler(stack, args, out)
    return code


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        # a pipe gets every column whole (rich would squeeze a table to 80 columns, wrapping ids over lines)
        self.stdout = Console(soft_wrap=True, highlight=False, width=None if sys.stdout.isatty() else 1000)
        self.stderr = Console(stderr=True, highlight=False)

    def result(self, data: dict[str, Any], text: str) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
        else:
            self.stdout.print(text, markup=False)

    def table(self, jobs: list[dict[str, Any]], title: str) -> None:
        if self.as_json:
            for job in jobs:
                self.result(job, "")
            return
        self.stdout.print(job_table(jobs, title))


def job_table(jobs: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column.replace("_percent", " %"))
    for job in jobs:
        style = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(str(job.get("state")), "")
        table.add_row(*(str(job.get(column, "")) for column in COLUMNS), style=style)
    return table


def _summary(job: dict[str, Any]) -> str:
    text = f"{job['job_id']}  attempt {job.get('attempt', '?')}  {job.get('state')}  {job.get('source_key', '')}"
    if job.get("state") == "running":
        text += f"  {job.get('progress_percent', 0)}% after {job.get('polls', 0)} polls"
    if job.get("error_code"):
        text += f"  {job['error_code']}: {job.get('error_message', '')}"
    if job.get("video_key"):
        text += f"  video {job['video_key']}"
    return text


def _failed(jobs: list[dict[str, Any]]) -> bool:
    return any(job.get("state") in ("failed", "cancelled", "unknown") for job in jobs)


# -- the commands --------------------------------------------------------------------------------------------


def _drop(stack: Stack, args: argparse.Namespace, out: Output) -> int:
    from img2video_local.cli import UsageError, plan_uploads

    folder = args.folder.strip("/")
    prefix = stack.input_prefix + (f"{folder}/" if folder else "")
    fields = {name: getattr(args, name) for name in SIDECAR_OPTIONS if getattr(args, name) is not None}
    fields.update({name: True for name in SIDECAR_FLAGS if getattr(args, name)})
    if fields and args.prompt is None:
        raise CommandError("sidecar fields need --prompt too (a sidecar's prompt is required)", exit_code=2)
    try:
        # a sidecar written here is always JSON; every upload is checked before any is made
        plan = plan_uploads(
            args.files,
            prefix,
            args.prompt,
            fields,
            force=args.force,
            default_prompt=stack.default_prompt,
            stack_settings=stack.sidecar_settings,
        )
    except UsageError as exc:
        raise CommandError(str(exc), exit_code=2) from None
    commands.drop(stack, [(upload.key, upload.read()) for upload in plan.uploads])
    # each image's job id, as soon as Accept has made its job (seconds; with a DefaultPrompt, after the sidecar's grace)
    found = commands.jobs_of_keys(stack, plan.images, min(args.timeout, JOB_ID_WAIT_SECONDS))
    for upload in plan.uploads:
        line: dict[str, Any] = {"dropped": upload.key, "kind": "sidecar", "bucket": stack.input_bucket}
        text = f"dropped s3://{stack.input_bucket}/{upload.key}"
        if upload.key in plan.images:
            line.update(kind="image", job_id=found.get(upload.key))
            text += f"  job {found[upload.key]}" if upload.key in found else "  (no job yet: `status` shows it once accepted)"
        out.result(line, text)
    if not args.wait:
        return 0
    return _watch_jobs(stack, list(found.values()), args.timeout, out)


def _status(stack: Stack, args: argparse.Namespace, out: Output) -> int:
    jobs = commands.find_jobs(stack, args.job)
    if not jobs:
        raise CommandError(f"no job or image {args.job} in the jobs table")
    for job in jobs:
        out.result(job, _summary(job))
    return 1 if _failed(jobs[:1]) else 0


def _jobs(stack: Stack, args: argparse.Namespace, out: Output) -> int:
    states = tuple(args.state or STATES)
    jobs = commands.jobs_in(stack, states, commands.parse_since(args.since))
    out.table(jobs, f"{len(jobs)} jobs" + (f" ({', '.join(states)})" if args.state else ""))
    return 0


def _watch(stack: Stack, args: argparse.Namespace, out: Output) -> int:
    job_ids = args.job_ids or [str(job["job_id"]) for job in commands.jobs_in(stack, tuple(s for s in STATES if s not in TERMINAL))]
    if not job_ids:
        out.stderr.print("no unfinished jobs")
        return 0
    return _watch_jobs(stack, job_ids, args.timeout, out)


def _watch_jobs(stack: Stack, job_ids: list[str], timeout: float, out: Output) -> int:
    if out.stderr.is_terminal:  # a live table for a person; a pipe or a log file gets only the results
        with Live(job_table([], "waiting"), console=out.stderr, refresh_per_second=4, transient=out.as_json) as live:
            jobs = commands.wait_for(stack, job_ids, timeout, lambda seen: live.update(job_table(seen, f"{len(seen)} jobs")))
    else:
        jobs = commands.wait_for(stack, job_ids, timeout)
    for job in jobs:
        out.result(job, _summary(job))
    unfinished = [job for job in jobs if job.get("state") not in TERMINAL]
    if unfinished:
        out.stderr.print(f"{len(unfinished)} jobs still running after {timeout:.0f} s")
        return 1
    return 1 if _failed(jobs) else 0


def _retry(stack: Stack, args: argparse.Namespace, out: Output) -> int:
    if bool(args.job) == bool(args.failed):
        raise CommandError("give a JOB or --failed", exit_code=2)
    if args.job:
        job = commands.get_job(stack, args.job)
        if job is None:
            raise CommandError(f"no job {args.job} in the jobs table")
        if job.get("state") not in TERMINAL:
            raise CommandError(f"job {args.job} is still {job.get('state')}; cancel it first or wait for its notice")
        if job.get("batch_id"):
            raise CommandError(_a_line_of_a_batch(job))
        targets = [job]
    else:
        latest: dict[str, dict[str, Any]] = {}
        for job in commands.jobs_in(stack, ("failed", "cancelled"), commands.parse_since(args.since)):
            latest.setdefault(str(job["source_key"]), job)
        # only images whose newest attempt failed: one that succeeded (or runs) since is not retried again
        targets = [job for key, job in latest.items() if commands.attempts_of(stack, key)[0]["job_id"] == job["job_id"]]
        lines = [job for job in targets if job.get("batch_id")]
        for job in lines:  # copying the image would start nothing (a .batch folder) or a pair the user never asked for
            out.stderr.print(f"skipped {job['job_id']}: {_a_line_of_a_batch(job)}")
        targets = [job for job in targets if not job.get("batch_id")]
    keys = [commands.retry(stack, job) for job in targets]
    earlier = frozenset(str(job["job_id"]) for job in targets)
    new = commands.jobs_of_keys(stack, keys, JOB_ID_WAIT_SECONDS, earlier) if keys else {}
    for key, job in zip(keys, targets, strict=True):
        text = f"retrying {key} (after job {job['job_id']}): " + (f"job {new[key]}" if key in new else "no job yet")
        out.result({"retried": key, "previous_job_id": job["job_id"], "job_id": new.get(key)}, text)
    if not targets:
        out.stderr.print("nothing to retry")
    return 0


def _a_line_of_a_batch(job: dict[str, Any]) -> str:
    return (
        f"job {job['job_id']} is line {job.get('line', '?')} of a batch manifest: upload the manifest again for a new "
        "attempt of its lines, or a manifest of the lines to retry (`batch status` lists the failed ones)"
    )


def _connect_bucket(stack: Stack, args: argparse.Namespace, out: Output) -> int:
    done = connect(stack.client("s3"), args.bucket)
    lines = [f"{done['bucket']}: EventBridge {done['eventbridge']}; its other notifications, kept as they were:"]
    lines += [f"  {line}" for line in done["kept"]] or ["  (none)"]
    if stack.input_bucket != args.bucket:
        lines.append(
            f"note: this stack takes uploads from {stack.input_bucket}; deploy with ExistingInputBucket={args.bucket} to use this one"
        )
    out.result(done, "\n".join(lines))
    return 0


def _batch(stack: Stack, args: argparse.Namespace, out: Output) -> int:
    status = commands.batch_status(stack, args.manifest)
    counts = ", ".join(f"{count} {outcome}" for outcome, count in status["counts"].items())
    lines = "?" if status["lines"] is None else str(status["lines"])
    text = f"{status['manifest']}  batch {status['batch_id']}  attempt {status['attempt']}"
    text += f"\n  {status['ended']} of {lines} lines ended: {counts}"
    if status["lines"] is None:
        text += "\n  (its lines are still being read)"
    if status["failed_lines"]:
        text += "\n  failed lines: " + ", ".join(str(n) for n in status["failed_lines"][:100])
        text += f" and {len(status['failed_lines']) - 100} more" if len(status["failed_lines"]) > 100 else ""
    if status["error"]:
        text += f"\n  {status['error']['code']}: {status['error']['message']}"
    text += (
        f"\n  completed at {status['completed_at']} (its batch.completed notice went out)"
        if status["completed_at"]
        else "\n  not completed yet"
    )
    out.result(status, text)
    return 1 if status["failed_lines"] or status["error"] else 0


def _cancel(stack: Stack, args: argparse.Namespace, out: Output) -> int:
    message = commands.cancel(stack, args.job)
    out.result({"cancelled": args.job}, message)
    return 0


def _fetch(stack: Stack, args: argparse.Namespace, out: Output) -> int:
    jobs = commands.find_jobs(stack, args.job)
    succeeded = [job for job in jobs if job.get("state") == "succeeded"]
    if not succeeded:
        raise CommandError(f"{args.job} has no stored video" + (f" (latest: {jobs[0].get('state')})" if jobs else ""))
    paths, link = commands.fetch(stack, succeeded[0], args.out)
    out.result(
        {"job_id": succeeded[0]["job_id"], "files": [str(path) for path in paths], "url": link},
        "\n".join([*(str(path) for path in paths), link]),
    )
    return 0
