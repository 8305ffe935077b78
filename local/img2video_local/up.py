"""`img2video local up`: the embedded stack kept running on loopback, so the CLI's commands, the AWS CLI (with
--endpoint-url) and a user's own SNS subscriber reach it the way they reach a deployed stack."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from img2video_local.commands import SIDECAR_PARAMETERS, CommandError, Stack, local_state_path
from img2video_local.runtime import LocalPipeline
from img2video_local.template import REGION, STACK_NAME


def claim_port(port: int) -> None:
    """Refuse a port another server listens on, before anything starts (a second `local up` used to hang)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free; one listened on is not
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise CommandError(
                f"port {port} is in use: is another `img2video local up` running? (it writes {local_state_path()}) "
                "Stop it with Ctrl-C, or give --port with a free port (0 picks one)"
            ) from None


def program() -> str:
    """How this user runs `img2video`: the bare name when it is on PATH, else the path they typed (.venv/bin/img2video)."""
    invoked = Path(sys.argv[0])
    on_path = shutil.which("img2video")
    if on_path and invoked.name == "img2video" and Path(on_path).resolve() == invoked.resolve():
        return "img2video"
    script = invoked if invoked.name == "img2video" else Path(sys.executable).parent / "img2video"
    relative = os.path.relpath(script)
    return relative if not relative.startswith("..") else str(script)


@contextmanager
def serving(pipeline: LocalPipeline, port: int = 0) -> Iterator[Stack]:
    """Serve the pipeline's AWS (the same in-process moto backends its handlers use) on 127.0.0.1:`port`."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request would drown the terminal
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        host, bound = server.get_host_and_port()
        yield Stack(
            name=STACK_NAME,
            region=REGION,
            input_bucket=pipeline.input_bucket,
            input_prefix=pipeline.input_prefix,
            output_bucket=pipeline.output_bucket,
            jobs_table=pipeline.stack.id("JobsTable"),
            state_machine_arn=pipeline.stack.id("VideoJobStateMachine"),
            endpoint_url=f"http://{host}:{bound}",
            default_prompt=pipeline.stack.environment.get("DEFAULT_PROMPT", ""),
            sidecar_settings={
                setting: value for setting in SIDECAR_PARAMETERS.values() if (value := pipeline.stack.environment.get(setting.upper(), ""))
            },
        )
    finally:
        server.stop()


def describe(stack: Stack, topic_arn: str) -> str:
    path = local_state_path()
    return "\n".join(
        [
            f"img2video local stack is up at {stack.endpoint_url} (region {stack.region}; any credentials)",
            f"  input bucket   {stack.input_bucket}  (drop images under {stack.input_prefix})",
            f"  output bucket  {stack.output_bucket}",
            f"  jobs table     {stack.jobs_table}",
            f"  notices topic  {topic_arn}",
            f"  state machine  {stack.state_machine_arn}",
            f"Written to {path}; in another terminal:",
            f"  {program()} local drop photo.jpg --prompt 'waves roll in' --wait",
            f"  {program()} local jobs",
            "The AWS CLI needs credentials, any will do:",
            f"  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION={stack.region}",
            f"  aws --endpoint-url {stack.endpoint_url} s3 ls s3://{stack.input_bucket}/ --recursive",
            "Ctrl-C stops it (the stack lives in memory only).",
        ]
    )
