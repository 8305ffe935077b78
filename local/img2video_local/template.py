"""Reading template.yaml for local mode: parameters, functions, environment and the ASL substitutions."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from img2video_local.cfn import check_parameters, translate


def _stack_root() -> Path:
    """Where template.yaml, statemachine/ and functions/ are: the clone this code runs from, or (after `pip install .`)
    the copies shipped inside the package (pyproject.toml's img2video_local.stack)."""
    clone = Path(__file__).resolve().parents[2]
    return clone if (clone / "template.yaml").is_file() else Path(__file__).resolve().parent / "stack"


REPO_ROOT = _stack_root()
TEMPLATE_PATH = REPO_ROOT / "template.yaml"

ACCOUNT = "123456789012"
REGION = "us-east-1"
STACK_NAME = "img2video-local"
STACK_ID = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{STACK_NAME}/00000000-0000-4000-8000-000000000000"


class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no types
    """YAML loader that turns CloudFormation short tags (!Ref, !Sub, ...) into their long form."""


def _construct_tag(loader: _CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        data: dict[str, Any] = yaml.load(handle, Loader=_CfnLoader)
    return data


NO_VALUE = object()  # Ref AWS::NoValue: the property or list item is left out
NO_VALUE_REF = {"Ref": "AWS::NoValue"}


def _reserved(value: Any) -> int | None:
    return None if value is NO_VALUE else int(value)


PUBLISHED_VERSION = "1"  # a fresh stack's first published version of a function with AutoPublishAlias


@dataclass
class FunctionSpec:
    logical_id: str
    code_uri: Path
    handler: str
    environment: dict[str, Any]
    timeout: int
    memory: int
    events: dict[str, Any] = field(default_factory=dict)  # the SAM Events block: SQS event sources, EventBridge rules
    alias: str | None = None  # AutoPublishAlias: SAM publishes version 1 of a new stack and points this alias at it
    reserved_concurrency: int | None = None  # ReservedConcurrentExecutions: invocations beyond it are throttled

    @property
    def qualifiers(self) -> set[str]:
        """What Invoke accepts after the function's name: $LATEST, and its version and alias when it publishes them."""
        return {"$LATEST", PUBLISHED_VERSION, self.alias} if self.alias else {"$LATEST"}

    @property
    def name(self) -> str:
        return f"{STACK_NAME}-{self.logical_id}"

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.name}"


@dataclass
class Template:
    """The parts of the template local mode needs, with intrinsic functions resolved locally."""

    raw: dict[str, Any]
    parameters: dict[str, str]
    physical_ids: dict[str, str] = field(default_factory=dict)
    arns: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)  # Fn::GetAtt beyond Arn: a queue's QueueName, ...

    @classmethod
    def load(cls, overrides: dict[str, str] | None = None, path: Path = TEMPLATE_PATH) -> Template:
        raw = load_template(path)
        params = {name: str(spec.get("Default", "")) for name, spec in raw.get("Parameters", {}).items()}
        unknown = set(overrides or {}) - set(params)
        if unknown:
            raise ValueError(f"unknown template parameters: {sorted(unknown)}")
        params.update(overrides or {})
        check_parameters(raw.get("Parameters", {}), params)  # CloudFormation refuses a value its constraints do not allow
        return cls(raw=raw, parameters=params)

    @property
    def translated(self) -> dict[str, Any]:
        """The template after the SAM transform: the resources, roles and policies CloudFormation creates."""
        if not hasattr(self, "_translated"):
            self._translated = translate(self.raw)
        return self._translated

    @property
    def resources(self) -> dict[str, Any]:
        resources: dict[str, Any] = self.raw["Resources"]
        return resources

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        """The resources of this type that the stack creates (a resource whose Condition is false does not exist)."""
        return {
            name: res
            for name, res in self.resources.items()
            if res["Type"] == kind and ("Condition" not in res or self.condition(res["Condition"]))
        }

    # -- intrinsic functions, for the subset the template uses --------------------------------
    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in (self.resolve(item) for item in value) if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            return {key: item for key, item in ((key, self.resolve(item)) for key, item in value.items()) if item is not NO_VALUE}
        ((fn, arg),) = value.items()
        if fn == "Ref":
            return NO_VALUE if arg == "AWS::NoValue" else self._ref(arg)
        if fn.startswith("Fn::"):
            return self._function(fn, arg)
        resolved = self.resolve(arg)
        return {} if resolved is NO_VALUE else {fn: resolved}

    def _function(self, fn: str, arg: Any) -> Any:
        """One of the intrinsic functions the template uses."""
        if fn == "Fn::GetAtt":
            logical, attribute = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return self._get_att(logical, attribute)
        if fn == "Fn::Sub":
            text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(extra.get(m.group(1)) or self._sub_var(m.group(1))), text)
        if fn == "Fn::If":
            condition, if_true, if_false = arg
            return self.resolve(if_true if self.condition(condition) else if_false)
        if fn == "Fn::Join":
            return str(arg[0]).join(str(self.resolve(item)) for item in arg[1])
        if fn == "Fn::Select":
            return self.resolve(arg[1])[int(self.resolve(arg[0]))]
        if fn == "Fn::Split":
            return str(self.resolve(arg[1])).split(arg[0])
        raise ValueError(f"local mode does not resolve {fn}")

    def condition(self, name: str) -> bool:
        """A template condition, for the subset the template uses (Equals, Not)."""
        return self._truth(self.raw.get("Conditions", {})[name])

    def _truth(self, expression: Any) -> bool:
        ((fn, arg),) = expression.items()
        if fn == "Fn::Equals":
            left, right = (self.resolve(item) for item in arg)
            return str(left) == str(right)
        if fn == "Fn::Not":
            return not self._truth(arg[0])
        if fn == "Condition":
            return self.condition(arg)
        raise ValueError(f"local mode does not evaluate {fn}")

    def _sub_var(self, name: str) -> str:
        if "." in name:
            logical, attribute = name.split(".", 1)
            return str(self._get_att(logical, attribute))
        return str(self._ref(name))

    def _ref(self, name: str) -> Any:
        pseudo = {
            "AWS::StackId": STACK_ID,
            "AWS::StackName": STACK_NAME,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.physical_ids:
            return self.physical_ids[name]
        if "." in name:  # SAM's MyFunction.Version and MyFunction.Alias (only with AutoPublishAlias, as SAM requires)
            logical, attribute = name.split(".", 1)
            spec = next((spec for spec in self.functions() if spec.logical_id == logical), None)
            if spec is not None and spec.alias and attribute in ("Version", "Alias"):
                return f"{spec.arn}:{PUBLISHED_VERSION if attribute == 'Version' else spec.alias}"
        raise KeyError(f"local mode has not created {name} yet")

    def _get_att(self, logical: str, attribute: str) -> Any:
        if attribute == "Arn" and logical in self.arns:
            return self.arns[logical]
        if attribute == "FunctionUrl" and logical in self.physical_ids:  # an AWS::Lambda::Url's physical id is its URL
            return self.physical_ids[logical]
        if attribute in self.attributes.get(logical, {}):
            return self.attributes[logical][attribute]
        raise KeyError(f"local mode cannot resolve {logical}.{attribute}")

    # -- functions ------------------------------------------------------------------------------
    def functions(self) -> list[FunctionSpec]:
        globals_ = self.raw.get("Globals", {}).get("Function", {})
        global_env = globals_.get("Environment", {}).get("Variables", {})
        specs = []
        for logical, res in self.of_type("AWS::Serverless::Function").items():
            props = res["Properties"]
            env = {**global_env, **props.get("Environment", {}).get("Variables", {})}
            specs.append(
                FunctionSpec(
                    logical_id=logical,
                    code_uri=REPO_ROOT / props["CodeUri"],
                    handler=props.get("Handler", globals_.get("Handler", "app.lambda_handler")),
                    environment=env,
                    timeout=int(props.get("Timeout", globals_.get("Timeout", 3))),
                    memory=int(props.get("MemorySize", globals_.get("MemorySize", 128))),
                    events=props.get("Events", {}),
                    alias=props.get("AutoPublishAlias", globals_.get("AutoPublishAlias")),
                    reserved_concurrency=_reserved(self.resolve(props.get("ReservedConcurrentExecutions", NO_VALUE_REF))),
                )
            )
        return specs
