"""What every handler needs, stored on the app under one typed key."""

from dataclasses import dataclass

from aiohttp import web
from pixq.deps import Dependencies
from pixq.limits import Limits
from pixq.settings import Settings
from pixq.tenants import TenantDirectory


@dataclass
class ApiContext:
    settings: Settings
    limits: Limits
    deps: Dependencies
    tenants: TenantDirectory


CONTEXT = web.AppKey("pixq_context", ApiContext)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]
