"""The models a sidecar may name, from the registry: `img2video models` prints them; docs/reference/models.md is this
module's Markdown, and a test checks the file is current (`make docs` writes it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from img2video.core.registry import DEFAULT_MODEL, MODELS, Field, ModelSpec, spelled

DOC = Path(__file__).resolve().parents[2] / "docs" / "reference" / "models.md"
SOURCE = "../shared/novita-image-to-video-models.md"


def _default(field: Field) -> str:
    return "—" if field.default is None else json.dumps(spelled(field.default))


def _images(spec: ModelSpec) -> str:
    end = ""
    if spec.end_image_path:
        end = f'; end frame: `"end_image"` ({"required" if spec.end_image_required else "optional"})'
    extra = f"; up to {spec.max_extra_images} `extra_images`" if spec.max_extra_images else ""
    inline = "inline or by URL" if spec.image.inline else "by URL only"
    return f"{spec.image.describe()}; sent {inline}{end}{extra}"


def as_dict(spec: ModelSpec) -> dict[str, Any]:
    """One model as `img2video models --json` prints it."""
    return {
        "model": spec.name,
        "title": spec.title,
        "default": spec.name == DEFAULT_MODEL,
        "endpoint": spec.endpoint,
        "fields": [
            {"name": f.name, "sent_as": f.where, "accepts": f.rule(), "default": f.default, "required": f.required, "note": f.note}
            for f in spec.fields
        ],
        "end_image": "required" if spec.end_image_required else "optional" if spec.end_image_path else None,
        "extra_images": spec.max_extra_images,
        "images": spec.image.describe(),
        "inline_images": spec.image.inline,
        "slow_tier": dict([spec.slow_tier]) if spec.slow_tier else None,
        "notes": list(spec.notes),
    }


def markdown() -> str:
    lines = [
        "# Models",
        "",
        "<!-- Generated from layers/img2video/img2video/core/registry.py by `make docs`; a test checks it is current. -->",
        "",
        'A sidecar names its model with `"model"`; without it, a job uses the stack\'s `DefaultModel`',
        f"(`{DEFAULT_MODEL}` unless changed). `AllowedModels` restricts the choice. Every field below is checked",
        "before anything is paid: a field the model does not take is refused, naming the models that do.",
        "",
        "The stack's `DefaultDuration`, `DefaultResolution`, `DefaultMovementAmplitude` and `DefaultWatermark` fill a",
        "model's field when the model offers that value; otherwise the model's own default applies.",
        "",
        f"Facts come from `{SOURCE}` (section named per model). Where Novita's page is silent, the",
        "conservative rule is taken and the model's notes say so.",
        "",
        "Fields every model takes: `model`, `output_name`, `tags`. `end_image` and `extra_images` name images",
        "beside the sidecar, for the models that take them.",
        "",
        "| Model | Endpoint | Source |",
        "|---|---|---|",
    ]
    lines += [f"| [`{spec.name}`](#{_anchor(spec.name)}) | `{spec.endpoint}` | {spec.source} |" for spec in MODELS.values()]
    for spec in MODELS.values():
        lines += ["", f"## {spec.name}", "", f"{spec.title}. Images: {_images(spec)}.", ""]
        lines += ["| Field | Sent as | Accepts | Default |", "|---|---|---|---|"]
        for field in spec.fields:
            accepts = field.rule() + (" (required)" if field.required else "") + (f"; {field.note}" if field.note else "")
            lines.append(f"| `{field.name}` | `{field.where}` | {accepts.replace('|', '/')} | {_default(field)} |")
        if spec.together:
            lines.append("")
            for rule in spec.together:
                allowed = " or ".join(json.dumps(spelled(choice)) for choice in rule.allowed)
                lines.append(f"- When `{rule.when[0]}` is {json.dumps(rule.when[1])}, `{rule.field}` must be {allowed}.")
        if spec.notes:
            lines.append("")
            lines += [f"- {note}" for note in spec.notes]
    return "\n".join(lines) + "\n"


def print_models(name: str | None, as_json: bool) -> int:
    """`img2video models [MODEL] [--json]`: every model in a table, or one model's fields; exit 2 for an unknown one."""
    from img2video.core.registry import closest_models
    from rich.console import Console
    from rich.table import Table

    if name is not None and name not in MODELS:
        near = closest_models(name)
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        print(f"img2video: error: {name} is not a model img2video knows{hint} (img2video models lists them)", file=sys.stderr)
        return 2
    chosen = [MODELS[name]] if name else list(MODELS.values())
    if as_json:
        for spec in chosen:
            print(json.dumps(as_dict(spec)))
        return 0
    console = Console(width=None if sys.stdout.isatty() else 1000)
    if name is None:
        table = Table("model", "fields", "end frame", "images")
        for spec in chosen:
            default = " (default)" if spec.name == DEFAULT_MODEL else ""
            end = "required" if spec.end_image_required else "optional" if spec.end_image_path else "—"
            table.add_row(spec.name + default, ", ".join(spec.by_name), end, spec.image.describe())
        console.print(table)
        console.print("`img2video models MODEL` shows one model's fields; docs/reference/models.md has them all.")
        return 0
    spec = chosen[0]
    table = Table("field", "sent as", "accepts", "default", title=f"{spec.name}: {spec.title}")
    for field in spec.fields:
        accepts = field.rule() + (" (required)" if field.required else "") + (f"; {field.note}" if field.note else "")
        table.add_row(field.name, field.where, accepts, _default(field))
    console.print(table)
    console.print(f"Images: {_images(spec)}.")
    for note in spec.notes:
        console.print(f"- {note}")
    return 0


def _anchor(name: str) -> str:
    return name.replace(".", "")


def write() -> None:
    DOC.write_text(markdown(), encoding="utf-8")


if __name__ == "__main__":
    write()
