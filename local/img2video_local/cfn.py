"""CloudFormation as local mode sees the stack: the SAM transform, parameter constraints, creation order and cycles.

Local mode builds the stack the way CloudFormation would: from the SAM-translated template, one resource after the
resources it references (Ref, Fn::GetAtt, Fn::Sub, DependsOn), refusing a stack CloudFormation would refuse and
saying so in CloudFormation's words.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from functools import cache
from typing import Any

# Lambda's limit on a function's environment: the variables as JSON, at most 4 KB.
LAMBDA_ENVIRONMENT_BYTES = 4096
_SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")  # ${Name} or ${Name.Attribute}; ${!Literal} is not a reference


class StackRefused(Exception):
    """What CloudFormation answers when it refuses to create the stack (a ValidationError or a failed resource)."""


class _NoManagedPolicies:
    """The SAM transform asks for managed policy ARNs by name only when a template names one that way; ours does not."""

    def load(self) -> dict[str, str]:
        return {}


def translate(sam: dict[str, Any]) -> dict[str, Any]:
    """The template after the SAM transform, with code locations as `sam package` writes them."""
    return copy.deepcopy(_translate(json.dumps(sam, sort_keys=True)))


@cache
def _translate(sam_json: str) -> dict[str, Any]:
    from samtranslator.translator.transform import transform  # slow to import; only local mode and tests need it

    from img2video_local.template import REGION

    packaged = json.loads(sam_json)
    for resource in packaged["Resources"].values():
        props = resource.get("Properties", {})
        for name in ("CodeUri", "ContentUri"):
            if name in props:
                props[name] = "s3://artifacts/code.zip"
        if "DefinitionUri" in props:
            props["DefinitionUri"] = {"Bucket": "artifacts", "Key": "statemachine.asl.json"}
    saved = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = REGION  # the transform builds ARNs for a region
    try:
        return dict(transform(packaged, {}, _NoManagedPolicies()))
    finally:
        if saved is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = saved


# -- parameters ------------------------------------------------------------------------------------------------


def check_parameters(specs: dict[str, dict[str, Any]], values: dict[str, str]) -> None:
    """Refuse values CloudFormation refuses: AllowedValues, AllowedPattern, Min/MaxLength, Min/MaxValue, Number."""
    for name, spec in specs.items():
        value = values.get(name, str(spec.get("Default", "")))
        problem = _parameter_problem(name, spec, value)
        if problem:
            if "ConstraintDescription" in spec:
                problem = f"Parameter {name} failed to satisfy constraint: {spec['ConstraintDescription']}"
            raise StackRefused(problem)


def _parameter_problem(name: str, spec: dict[str, Any], value: str) -> str | None:
    if spec.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            return f"Parameter '{name}' must be a number."
        if "MinValue" in spec and number < float(spec["MinValue"]):
            return f"Parameter '{name}' must be a number not less than {spec['MinValue']}"
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            return f"Parameter '{name}' must be a number not greater than {spec['MaxValue']}"
    if "AllowedValues" in spec and value not in [str(allowed) for allowed in spec["AllowedValues"]]:
        return f"Parameter '{name}' must be one of AllowedValues"
    if "MinLength" in spec and len(value) < int(spec["MinLength"]):
        return f"Parameter '{name}' must contain at least {spec['MinLength']} characters"
    if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
        return f"Parameter '{name}' must contain at most {spec['MaxLength']} characters"
    # CloudFormation matches the whole value against the pattern (Java's String.matches)
    if "AllowedPattern" in spec and re.fullmatch(str(spec["AllowedPattern"]), value) is None:
        return f"Parameter '{name}' must match pattern {spec['AllowedPattern']}"
    return None


# -- the order of creation -------------------------------------------------------------------------------------


def references(value: Any) -> Iterator[str]:
    """Every name a piece of template refers to: Ref, Fn::GetAtt and the variables of Fn::Sub (its own map excluded)."""
    if isinstance(value, list):
        for item in value:
            yield from references(item)
        return
    if not isinstance(value, dict):
        return
    for key, arg in value.items():
        if key == "Ref" and isinstance(arg, str):
            yield arg
        elif key == "Fn::GetAtt":
            yield (arg[0] if isinstance(arg, list) else str(arg).split(".", 1)[0])
        elif key == "Fn::Sub":
            text, local = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            for variable in _SUB_VARIABLE.findall(text):
                if variable not in local:
                    yield variable.split(".", 1)[0]
            yield from references(local)
        else:
            yield from references(arg)


def dependencies(resources: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    """Each resource's resources: those it names (in any branch of an Fn::If, as CloudFormation reads them) or DependsOn."""
    graph: dict[str, set[str]] = {}
    for logical, resource in resources.items():
        depends_on = resource.get("DependsOn", [])
        named = set(references(resource.get("Properties", {}))) | set([depends_on] if isinstance(depends_on, str) else depends_on)
        graph[logical] = {name for name in named if name in resources}
    return graph


def creation_order(resources: dict[str, dict[str, Any]]) -> list[str]:
    """The resources in an order CloudFormation could create them; a cycle is refused as CloudFormation refuses it."""
    graph = dependencies(resources)
    cycle = _in_cycles(graph)
    if cycle:
        raise StackRefused(f"Circular dependency between resources: [{', '.join(cycle)}]")
    order: list[str] = []
    done: set[str] = set()
    waiting = dict(graph)
    while waiting:
        ready = sorted(name for name, needs in waiting.items() if needs <= done)
        order.extend(ready)
        done.update(ready)
        for name in ready:
            del waiting[name]
    return order


def _in_cycles(graph: dict[str, set[str]]) -> list[str]:
    """The resources that lie on a cycle (Tarjan's strongly connected components of more than one, or a self-reference)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[str] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.extend(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


# -- Lambda's own limits on what the stack configures ----------------------------------------------------------


def check_environment(function_name: str, variables: dict[str, str]) -> None:
    """Lambda refuses a function whose environment, as JSON, is over 4 KB (the create fails with this message)."""
    measured = json.dumps(variables, separators=(",", ":"), ensure_ascii=False)
    if len(measured.encode()) > LAMBDA_ENVIRONMENT_BYTES:
        raise StackRefused(
            f'Resource handler returned message: "Lambda was unable to configure your environment variables because the '
            f'environment variables you have provided exceeded the 4KB limit. String measured: {measured[:200]}..." '
            f"(function {function_name}, {len(measured.encode())} bytes)"
        )
