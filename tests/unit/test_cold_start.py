"""What a cold start loads: with tracing off (the stack's default) no handler imports the X-Ray SDK or Powertools'
Parser (with its dozens of event models); bench/import_time.py measures the time against bare boto3."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from img2video_local.template import REPO_ROOT

HANDLERS = sorted(path.name for path in (REPO_ROOT / "functions").iterdir() if (path / "app.py").exists())
HEAVY = ("aws_xray_sdk", "aws_lambda_powertools.utilities.parser")
CODE = """
import importlib.util, json, sys
sys.path.insert(0, {layer!r})
spec = importlib.util.spec_from_file_location("app", {path!r})
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps([name for name in {heavy!r} if name in sys.modules]))
"""


def _loaded(handler: str, tracing: bool) -> list[str]:
    code = CODE.format(layer=str(REPO_ROOT / "layers" / "img2video"), path=str(REPO_ROOT / "functions" / handler / "app.py"), heavy=HEAVY)
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "false" if tracing else "true"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    loaded: list[str] = json.loads(out.stdout)
    return loaded


@pytest.mark.parametrize("handler", HANDLERS)
def test_with_tracing_off_a_handler_loads_neither_the_xray_sdk_nor_the_parser(handler: str) -> None:
    assert _loaded(handler, tracing=False) == []


def test_with_tracing_on_the_tracer_is_the_real_one() -> None:
    assert _loaded("poll", tracing=True) == ["aws_xray_sdk"]
