"""What every handler needs, stored on the app under one typed key."""

from dataclasses import dataclass

from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from pixq.limits import Limits
from pixq.settings import Settings
from pixq.status import StatusStore
from pixq.storage import Storage


@dataclass
class ApiContext:
    settings: Settings
    limits: Limits
    nc: NATS
    js: JetStreamContext
    status: StatusStore
    storage: Storage


CONTEXT = web.AppKey("pixq_context", ApiContext)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]
