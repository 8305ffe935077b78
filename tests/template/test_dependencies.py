"""What a user installs gets what the code imports: `pip install .` (pyproject's dependencies) and `make demo`
(requirements-local.txt) each bring every distribution the `img2video` command and local mode import."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

from img2video_local.template import REPO_ROOT

RUNTIME_CODE = [REPO_ROOT / "local" / "img2video_local", REPO_ROOT / "layers" / "img2video" / "img2video"]
OURS = {"img2video", "img2video_local"}


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalized as pip compares them."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", requirement.strip(), maxsplit=1)[0]).lower()


def _imported_distributions() -> dict[str, set[str]]:
    """Each third-party distribution the runtime code imports (at the top of a module or inside a function), with
    the files that import it."""
    providers = packages_distributions()
    found: dict[str, set[str]] = {}
    for folder in RUNTIME_CODE:
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top in OURS or top in sys.stdlib_module_names or top == "__future__":
                        continue
                    for distribution in providers.get(top, [top]):
                        found.setdefault(_name(distribution), set()).add(path.name)
    return found


def test_pip_install_brings_every_distribution_the_command_imports() -> None:
    """`pip install .` gave `ModuleNotFoundError: No module named 'rich'` (its dependencies were empty)."""
    declared = {_name(r) for r in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    missing = {name: sorted(files) for name, files in _imported_distributions().items() if name not in declared}
    assert not missing, f"imported but not in pyproject.toml's dependencies: {missing}"


def test_make_demo_pins_every_distribution_the_command_imports_and_every_declared_one() -> None:
    """`make demo` installs requirements-local.txt only: local mode imported aws-sam-translator, pinned for tests alone."""
    lines = (REPO_ROOT / "requirements-local.txt").read_text().splitlines()
    pinned = {_name(line) for line in lines if line.strip() and not line.startswith(("#", "-"))}
    declared = {_name(r) for r in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert not (set(_imported_distributions()) | declared) - pinned, "imported or declared, but not pinned for make demo"


def test_the_wheel_ships_the_stack_local_mode_builds(tmp_path: Path) -> None:
    """`pip install .` then `img2video demo` anywhere: local mode read template.yaml beside the clone it ran from."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path), str(REPO_ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    [wheel] = tmp_path.glob("img2video-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    stack = "img2video_local/stack/"
    functions = {f"{stack}functions/{path.parent.name}/app.py" for path in (REPO_ROOT / "functions").glob("*/app.py")}
    assert {f"{stack}template.yaml", f"{stack}statemachine/video_job.asl.json", *functions} <= names
    package = {f"img2video/{path.relative_to(RUNTIME_CODE[1]).as_posix()}" for path in RUNTIME_CODE[1].rglob("*.py")}
    assert package <= names, package - names
