"""Compiling a submit's spec: from its parameters, or from a named preset (being built)."""

from typing import Any

from api.context import ApiContext
from api.uploads import SubmitRequest
from pixq.jobs import JobType
from pixq.spec import PipelineSpec, to_pipeline
from pixq.tenants import Tenant


def compile_spec(ctx: ApiContext, tenant: Tenant, job_type: JobType,
                 submit: SubmitRequest) -> tuple[PipelineSpec, dict[str, Any] | None]:
    """The typed spec to run, and ``{"name", "version"}`` of the preset it came from (or None)."""
    return to_pipeline(job_type, submit.parameters), None
