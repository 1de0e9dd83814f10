"""Compiling a submit's spec: from its parameters, or from a named preset (pixq.presets).

A submit names a preset with a top-level JSON field ``"preset": "avatar"`` (or
``"avatar@2"``), or a multipart form field ``preset``. Decisions, documented in docs/inputs.md:

* a preset *is* a pipeline, so only ``POST /api/v1/jobs`` accepts one (the job's type stays
  ``pipeline``); ``/resize`` and ``/crop`` refuse it (422), rather than recording a ``resize``
  job whose spec is something else;
* a preset together with explicit parameters (``parameters``/``spec``, or any other form
  field) is refused (422), never merged: the recorded ``{name, version}`` then says exactly
  what ran, and a client never has to guess which side of a merge won.
"""

from typing import Any

from api.context import ApiContext
from api.uploads import SubmitRequest
from pixq.errors import ErrorCode, PixqError
from pixq.jobs import JobType
from pixq.presets import load_presets
from pixq.spec import PipelineSpec, to_pipeline
from pixq.tenants import Tenant

PRESET_FIELD = "preset"


def preset_reference(submit: SubmitRequest) -> str | None:
    """The submit's preset reference, taken out of its fields; None when it names none."""
    reference = submit.extra.pop(PRESET_FIELD, None)
    in_form = submit.parameters.pop(PRESET_FIELD, None) if isinstance(submit.parameters, dict) else None
    if reference is not None and in_form is not None:
        raise PixqError(ErrorCode.INVALID_REQUEST, "name the preset once")
    reference = reference if reference is not None else in_form
    if reference is None:
        return None
    if not isinstance(reference, str) or not reference or len(reference) > 200:
        raise PixqError(ErrorCode.INVALID_REQUEST, '"preset" must be a preset name such as "avatar" or "avatar@2"')
    return reference


def compile_spec(ctx: ApiContext, tenant: Tenant, job_type: JobType,
                 submit: SubmitRequest) -> tuple[PipelineSpec, dict[str, Any] | None]:
    """The typed spec to run, and ``{"name", "version"}`` of the preset it came from (or None)."""
    reference = preset_reference(submit)
    if reference is None:
        return to_pipeline(job_type, submit.parameters), None
    if job_type is not JobType.PIPELINE:
        raise PixqError(ErrorCode.INVALID_PARAMETERS,
                        f"a preset is a pipeline: submit it to POST /api/v1/jobs, not /{job_type.value}")
    if submit.parameters:
        raise PixqError(ErrorCode.INVALID_PARAMETERS,
                        "give a preset or parameters, not both (got "
                        f"{', '.join(sorted(map(str, submit.parameters)))[:200]} with preset {reference[:100]!r})")
    preset = load_presets(ctx.settings).resolve(reference, tenant.name)
    return preset.spec, preset.ref
