"""What the pipeline would refuse, found before anything is uploaded: each image's key, its sidecar and its bytes are
checked with the pipeline's own rules (core.keys, core.sidecar, core.images), so `drop` and `local run` upload nothing
when any upload would only come back as a failure notice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from img2video.core.errors import PipelineError
from img2video.core.images import check_image
from img2video.core.keys import image_key_problem, parse_input_key, pick_sidecar
from img2video.core.registry import MODELS
from img2video.core.settings import Settings
from img2video.core.sidecar import parse_sidecar

# Only the rules matter here: the stack's resources are not needed to judge a sidecar or an image.
_RULES = Settings(input_bucket="-", output_bucket="-", topic_arn="-", idempotency_table="-", jobs_table="-", novita_secret_id="-")


@dataclass(frozen=True)
class Candidate:
    """A file about to be uploaded: its key and a way to read its bytes."""

    key: str
    read: Callable[[], bytes]


def problems(
    candidates: list[Candidate],
    prefix: str,
    default_prompt: str = "",
    inline_only: bool = False,
    stack_settings: dict[str, str] | None = None,
) -> list[str]:
    """Every problem the pipeline would report for these uploads, one line each (empty: all would be accepted).

    `inline_only`: the images can only be sent inline (Novita's real API, from this machine), so a model that takes
    them by URL only is refused before anything is paid. `stack_settings`: the stack's DefaultModel, AllowedModels and
    defaults, so that a sidecar is judged as that stack's Accept will judge it."""
    rules = Settings.model_validate({**_RULES.model_dump(), **(stack_settings or {})})
    found: list[str] = []
    keys = [parsed for c in candidates if (parsed := parse_input_key(c.key, prefix)) is not None]
    by_key = {c.key: c for c in candidates}
    for image in (k for k in keys if k.kind == "image"):
        key_problem = image_key_problem(image.key, prefix)
        if key_problem:
            found.append(f"{image.key}: {key_problem}")
            continue
        sidecar = pick_sidecar(image, [k for k in keys if k.kind != "other" and k.same_stem(image)])  # as Accept lists them
        if sidecar is None and not default_prompt:
            found.append(
                f"{image.key} has no sidecar and the stack has no DefaultPrompt: give --prompt, or put "
                f"{image.stem}.json or {image.stem}.txt beside it"
            )
        spec = MODELS[rules.default_model]
        if sidecar is not None:
            try:
                spec = parse_sidecar(by_key[sidecar.key].read(), sidecar.key, rules).spec
            except PipelineError as exc:
                found.append(f"{exc.code}: {exc.message}")
        if inline_only and not spec.image.inline:
            found.append(
                f"{image.key}: {spec.name} takes images by URL only, and Novita cannot fetch them from this machine; "
                "run it on a deployed stack (img2video --stack NAME drop ...), or choose a model that takes inline images"
            )
        data = by_key[image.key].read()
        found += _refusal(check_image, image.key, len(data), _reader(data), spec.image, spec.name)  # the model's limits
    return list(dict.fromkeys(found))  # a sidecar shared by two images is reported once


def _reader(data: bytes) -> Callable[[int, int], bytes]:
    return lambda offset, length: data[offset : offset + length]


def _refusal(check: Callable[..., object], *args: object) -> list[str]:
    """The notice's words for what `check` refuses: its error code and message."""
    try:
        check(*args)
    except PipelineError as exc:
        return [f"{exc.code}: {exc.message}"]
    return []
