"""`make check-deploy`: what CloudFormation and Step Functions would refuse, found before a deploy.

It translates template.yaml with the SAM translator (as `sam deploy` does), runs cfn-lint on both forms (the pinned
cfn-lint skips cycles through AWS::Serverless::* resources, the translated form shows them), orders the translated
resources as CloudFormation creates them (a cycle is refused), validates the state machine with its substitutions
made (asl-validator, from npm), and runs checkov on the translated template, skipping only the rules
checkov-skips.yaml names with a reason. Prints one line per check; exits 1 if any failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from img2video_local.cfn import StackRefused, creation_order
from img2video_local.template import REPO_ROOT, Template

OUT = REPO_ROOT / ".aws-sam" / "check-deploy"


def _run(command: list[str]) -> tuple[bool, str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return result.returncode == 0, (result.stdout + result.stderr).strip()


def _substituted_definition(template: Template) -> str:
    """The ASL as CloudFormation makes it: each substitution resolved, as local mode resolves it in moto."""
    from moto import mock_aws

    from img2video_local.stack import provision

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "check")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "check")
    with mock_aws():
        stack = provision(template, "check")
        import boto3

        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        definition: str = sfn.describe_state_machine(stateMachineArn=stack.id("VideoJobStateMachine"))["definition"]
    return definition


def _checkov(checkov: str, translated: Path) -> tuple[str, bool, str]:
    """checkov on the translated template, skipping only the rules checkov-skips.yaml names, each with its reason."""
    import yaml

    skips: dict[str, str] = yaml.safe_load((REPO_ROOT / "checkov-skips.yaml").read_text(encoding="utf-8")) or {}
    unjustified = sorted(rule for rule, reason in skips.items() if not str(reason or "").strip())
    if unjustified:
        return ("checkov", False, f"checkov-skips.yaml names rules without a reason: {', '.join(unjustified)}")
    command = [checkov, "-f", str(translated), "--framework", "cloudformation", "--compact", "--quiet", "--skip-download"]
    ok, output = _run([*command, "--skip-check", ",".join(sorted(skips))] if skips else command)
    findings = [line for line in output.splitlines() if line.startswith(("Check:", "\tFAILED", "Passed checks"))]
    return (f"checkov on the translated template ({len(skips)} rules skipped, each with its reason)", ok, "\n".join(findings))


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    cfn_lint = str(Path(sys.executable).with_name("cfn-lint"))
    template = Template.load()
    translated = OUT / "translated.json"
    translated.write_text(json.dumps(template.translated, indent=1), encoding="utf-8")
    results: list[tuple[str, bool, str]] = []

    ok, output = _run([cfn_lint, str(REPO_ROOT / "template.yaml")])
    results.append(("cfn-lint template.yaml", ok, output))
    ok, output = _run([cfn_lint, str(translated)])
    results.append((f"cfn-lint on the SAM-translated template ({len(template.translated['Resources'])} resources)", ok, output))
    try:
        order = creation_order(template.translated["Resources"])
        results.append((f"CloudFormation's creation order: {len(order)} resources, no cycle", True, ""))
    except StackRefused as refused:
        results.append(("CloudFormation's creation order", False, str(refused)))

    definition = OUT / "video_job.asl.json"
    definition.write_text(_substituted_definition(template), encoding="utf-8")
    validator = os.environ.get("ASL_VALIDATOR") or shutil.which("asl-validator")
    if validator:
        ok, output = _run([validator, "--json-path", str(definition)])
        results.append(("asl-validator on the substituted state machine", ok, output))
    else:
        results.append(("asl-validator on the substituted state machine", False, "asl-validator not found (make check-deploy installs it)"))

    checkov = os.environ.get("CHECKOV") or shutil.which("checkov")
    if checkov:
        results.append(_checkov(checkov, translated))
    else:
        results.append(("checkov", False, "checkov not found (make check-deploy installs it)"))

    for name, ok, output in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
        if not ok and output:
            print("     " + output.replace("\n", "\n     "))
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
