"""The docs stay true: every relative link resolves, and every command they show is one the tools accept.

`img2video` commands are checked against the CLI's own parser (running each would take minutes), `make` targets
against the Makefile, scripts and sample paths against the tree. AWS and SAM commands need an account: they are
left to the reader."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from img2video_local.cli import _parser
from img2video_local.template import REPO_ROOT

DOCS = sorted([REPO_ROOT / "README.md", REPO_ROOT / "CONTRIBUTING.md", REPO_ROOT / "CHANGELOG.md", *(REPO_ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```(?:bash|sh|console)\n(.*?)```", re.S)


def _name(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+\s+(.*)$", path.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_every_relative_link_resolves(doc: Path) -> None:
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)  # links in code are not links
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        if not resolved.exists() or (anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved)):
            broken.append(target)
    assert not broken, f"{_name(doc)}: {broken}"


def _commands(doc: Path) -> list[list[str]]:
    """Each shell command the doc shows, as words (comments, continuations and `export` lines handled)."""
    found = []
    for block in FENCE.findall(doc.read_text(encoding="utf-8")):
        for line in block.replace("\\\n", " ").splitlines():
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue  # a line of a multi-line construct the reader pastes whole
            if words:
                found.append(words)
    return found


MAKE_TARGETS = set(re.findall(r"^([a-z0-9-]+):", (REPO_ROOT / "Makefile").read_text(), re.M))


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_every_command_shown_is_one_the_tools_accept(doc: Path) -> None:
    problems = []
    for words in _commands(doc):
        program, args = words[0], words[1:]
        if program.endswith("img2video"):
            try:
                _parser().parse_args(args)
            except SystemExit:
                problems.append(f"img2video refuses: {shlex.join(args)}")
            problems += [
                f"no such file: {arg}" for arg in args if arg.startswith(("local/", "bench/", "events/")) and not (REPO_ROOT / arg).exists()
            ]
        elif program == "make":
            problems += [f"no make target {target}" for target in args if not target.startswith("-") and target not in MAKE_TARGETS]
        elif program.endswith("python") and args and args[0].endswith(".py") and not (REPO_ROOT / args[0]).exists():
            problems.append(f"no such script: {args[0]}")
    assert not problems, f"{_name(doc)}: {problems}"


def test_the_models_reference_is_the_registry_as_it_is_now() -> None:
    from img2video_local.models_doc import DOC, markdown

    assert DOC.read_text(encoding="utf-8") == markdown(), "docs/reference/models.md is out of date: run `make docs`"
