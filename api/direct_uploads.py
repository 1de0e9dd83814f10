"""Direct uploads: clients put images straight into storage, then name them in a job (being built).

``claim`` is called at submit for ``{"input": {"upload_id": ...}}``: it returns the storage key
the job reads, after checking the object (size, magic bytes, header dimensions, the spec fits).
"""

from api.context import ApiContext
from pixq.errors import ErrorCode, PixqError
from pixq.spec import PipelineSpec
from pixq.tenants import Tenant


async def claim(ctx: ApiContext, tenant: Tenant, upload_id: str, spec: PipelineSpec) -> str:
    raise PixqError(ErrorCode.INVALID_PARAMETERS, "direct uploads are not available yet")
