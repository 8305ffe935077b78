"""`img2video local up`: the embedded stack kept running on loopback, so the CLI's commands, the AWS CLI (with
--endpoint-url) and a user's own SNS subscriber reach it the way they reach a deployed stack."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from img2video_local.commands import Stack, local_state_path
from img2video_local.runtime import LocalPipeline
from img2video_local.template import REGION, STACK_NAME


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
            "  img2video local drop photo.jpg --prompt 'waves roll in' --wait",
            "  img2video local jobs",
            f"  aws --endpoint-url {stack.endpoint_url} s3 ls s3://{stack.input_bucket}/ --recursive",
            "Ctrl-C stops it (the stack lives in memory only).",
        ]
    )
