"""`make build` (sam build) output: arm64 wheels in the shared layer, every handler present and importable from it.

Needs a Python 3.13 (`make python313` finds it); skipped where there is none. The arm64 layer's compiled
modules cannot load on an x86_64 host, so the imports are checked against a second build of the same
template for x86_64, which holds the same distributions.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from img2video_local.template import REPO_ROOT, load_template

SAM: Path = REPO_ROOT / ".venv-sam" / "bin" / "sam"  # created by `make build` (the Makefile's SAM_VENV)
BUILD_DIR: Path = REPO_ROOT / ".aws-sam" / "build"  # where `make build` writes
X86_DIR: Path = REPO_ROOT / ".aws-sam" / "x86_64"  # this test's second build, cached between runs like the first
ELF_MACHINE = {183: "aarch64", 62: "x86_64"}  # e_machine values

# Imports the handler with only the function and its layers on sys.path (under -I -S: no site-packages, no
# user site, no PYTHON* variables), then lists every loaded module file outside the standard library.
IMPORT_HANDLER = """
import importlib, json, sys, sysconfig
function_dir, layer_dirs, module, attribute = json.loads(sys.argv[1])
sys.path[:0] = [function_dir, *layer_dirs]
handler = getattr(importlib.import_module(module), attribute)
assert callable(handler), f"{module}.{attribute} is not callable"
stdlib = (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"])
files = {getattr(m, "__file__", None) or "" for m in list(sys.modules.values())}
print(json.dumps(sorted(f for f in files if f and not f.startswith(stdlib))))
"""


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without the outer make's flags (jobserver descriptors would not survive)."""
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}}
    return {**env, "SAM_CLI_TELEMETRY": "0", **extra}


def _run(args: list[str | Path], env: dict[str, str], timeout: int, cwd: Path = REPO_ROOT) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def python313() -> Path:
    found = subprocess.run(
        ["make", "--no-print-directory", "-s", "python313"], cwd=REPO_ROOT, env=_clean_env(), capture_output=True, text=True
    )
    if found.returncode != 0:
        why = found.stderr.strip().splitlines()[0] if found.stderr.strip() else "`make python313` failed"
        pytest.skip(f"no Python 3.13 to run sam build with: {why}")
    return Path(found.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def arm64_build(python313: Path) -> Path:
    """`make build`, as a developer runs it (creates .venv-sam on first use; cached builds after that)."""
    _run(["make", "--no-print-directory", "build"], _clean_env(), timeout=600)
    return BUILD_DIR


@pytest.fixture(scope="module")
def x86_64_build(python313: Path, arm64_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same template built for x86_64, so its handlers can be imported on this (x86_64) host."""
    template = load_template()
    for resource in template["Resources"].values():
        props, metadata = resource.get("Properties", {}), resource.get("Metadata", {})
        for field in ("CodeUri", "ContentUri", "DefinitionUri"):  # the copy lives elsewhere: absolute paths
            if isinstance(props.get(field), str) and "://" not in props[field]:
                props[field] = str(REPO_ROOT / props[field])
        if resource["Type"] == "AWS::Serverless::Function" and "Architectures" in props:
            props["Architectures"] = ["x86_64"]
        if resource["Type"] == "AWS::Serverless::LayerVersion":
            if "CompatibleArchitectures" in props:
                props["CompatibleArchitectures"] = ["x86_64"]
            if "BuildArchitecture" in metadata:
                metadata["BuildArchitecture"] = "x86_64"
    if "Architectures" in template.get("Globals", {}).get("Function", {}):
        template["Globals"]["Function"]["Architectures"] = ["x86_64"]
    path = tmp_path_factory.mktemp("x86_64") / "template.json"
    path.write_text(json.dumps(template), encoding="utf-8")
    build_dir = X86_DIR / "build"
    X86_DIR.mkdir(parents=True, exist_ok=True)
    env = _clean_env(PATH=f"{python313.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    _run(
        [SAM, "build", "--template-file", path, "--build-dir", build_dir, "--cache-dir", X86_DIR / "cache", "--cached", "--parallel"],
        env,
        timeout=600,
        cwd=X86_DIR,  # sam keeps cached dependencies in ./.aws-sam/deps and prunes those of other builds: not the arm64 ones
    )
    return build_dir


def _built(build_dir: Path, kind: str) -> dict[str, dict[str, Any]]:
    resources: dict[str, dict[str, Any]] = load_template(build_dir / "template.yaml")["Resources"]
    return {name: res for name, res in resources.items() if res["Type"] == kind}


def _layer_python(build_dir: Path, logical_id: str) -> Path:
    layer = _built(build_dir, "AWS::Serverless::LayerVersion")[logical_id]
    return build_dir / str(layer["Properties"]["ContentUri"]) / "python"


def _elf_machine(path: Path) -> str:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    machine = int.from_bytes(header[18:20], "little")
    return ELF_MACHINE.get(machine, str(machine))


def _functions(build_dir: Path) -> Iterator[tuple[str, Path, str, list[Path], dict[str, str]]]:
    """(logical id, built code dir, handler, built layer python/ dirs, environment) for every built function."""
    built = load_template(build_dir / "template.yaml")
    parameters = {name: str(spec.get("Default", "")) for name, spec in built.get("Parameters", {}).items()}
    globals_ = built.get("Globals", {}).get("Function", {})
    for name, res in _built(build_dir, "AWS::Serverless::Function").items():
        props = res["Properties"]
        layers = props.get("Layers", globals_.get("Layers", []))
        layer_dirs = [_layer_python(build_dir, layer["Ref"]) for layer in layers if isinstance(layer, dict) and "Ref" in layer]
        variables = {**globals_.get("Environment", {}).get("Variables", {}), **props.get("Environment", {}).get("Variables", {})}
        env = {}
        for key, value in variables.items():
            if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in parameters:
                value = parameters[value["Ref"]]
            env[key] = value if isinstance(value, str) else (str(value) if isinstance(value, int | float) else f"dummy-{key.lower()}")
        yield name, build_dir / str(props["CodeUri"]), str(props.get("Handler", globals_.get("Handler", ""))), layer_dirs, env


def test_layer_holds_aarch64_wheels_only(arm64_build: Path) -> None:
    layers = _built(arm64_build, "AWS::Serverless::LayerVersion")
    assert layers, "the built template has no layer"
    for logical_id in layers:
        python = _layer_python(arm64_build, logical_id)
        libraries = sorted(python.rglob("*.so"))
        machines = {str(lib.relative_to(python)): _elf_machine(lib) for lib in libraries}
        assert machines and set(machines.values()) == {"aarch64"}, machines
        assert not [name for name in machines if "x86_64" in name], machines
        pydantic_core = [name for name in machines if name.startswith("pydantic_core/")]
        assert pydantic_core and all("aarch64" in name for name in pydantic_core), machines
        tags = [line for wheel in python.glob("*.dist-info/WHEEL") for line in wheel.read_text().splitlines() if line.startswith("Tag:")]
        assert not [tag for tag in tags if "x86_64" in tag], tags


def test_every_function_has_its_handler_file(arm64_build: Path) -> None:
    functions = list(_functions(arm64_build))
    assert functions, "the built template has no function"
    for name, code_dir, handler, layer_dirs, _ in functions:
        module_file = code_dir / (handler.rsplit(".", 1)[0].replace(".", "/") + ".py")
        assert module_file.is_file(), f"{name}: {module_file.relative_to(REPO_ROOT)} was not built (Handler {handler!r})"
        assert layer_dirs and all(d.is_dir() for d in layer_dirs), f"{name}: layers {layer_dirs}"


def test_x86_64_layer_holds_the_same_distributions(arm64_build: Path, x86_64_build: Path) -> None:
    for logical_id in _built(arm64_build, "AWS::Serverless::LayerVersion"):
        arm64 = sorted(p.name for p in _layer_python(arm64_build, logical_id).glob("*.dist-info"))
        x86_64 = sorted(p.name for p in _layer_python(x86_64_build, logical_id).glob("*.dist-info"))
        assert arm64 == x86_64


def test_handlers_import_from_the_built_layer_alone(python313: Path, x86_64_build: Path) -> None:
    functions = list(_functions(x86_64_build))
    assert functions
    for name, code_dir, handler, layer_dirs, variables in functions:
        module, attribute = handler.rsplit(".", 1)
        env = {
            **variables,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "LANG": "C.UTF-8",
        }
        spec = json.dumps([str(code_dir), [str(d) for d in layer_dirs], module, attribute])
        result = subprocess.run(
            [python313, "-I", "-S", "-c", IMPORT_HANDLER, spec], cwd=x86_64_build, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{name} ({handler}) does not import from its built code and layer:\n{result.stderr[-4000:]}"
        roots = (str(code_dir), *map(str, layer_dirs))
        strays = [f for f in json.loads(result.stdout) if not f.startswith(roots)]
        assert not strays, f"{name} loaded modules from outside its code and layer: {strays}"
