"""Source URLs: images the worker fetches from the web, behind the SSRF guard (being built).

``check_source_url`` runs at submit (shape, scheme, allowlists); the worker's fetch checks
again on the connected address (pixq.outbound).
"""

from pixq.errors import ErrorCode, PixqError
from pixq.settings import Settings
from pixq.tenants import Tenant


def check_source_url(url: str, settings: Settings, tenant: Tenant) -> str:
    raise PixqError(ErrorCode.INVALID_PARAMETERS, "source URLs are not available yet")
