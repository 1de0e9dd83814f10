"""Public documents, rendered through the response models of pixq.schemas.

Job, job-page and batch documents leave the API through ``render``: the model the OpenAPI
document publishes is the one that shapes the answer, so a key the contract does not name
never leaks out, and a document that breaks the contract fails here, in tests, instead of
in a client. Only the keys a document has are written (``exclude_unset``): a key documented
as "only while retrying" stays absent otherwise, exactly as pixq.documents builds it.
(Submit answers are small fixed dicts on the hot path: tests/test_conformance.py checks them.)
"""

from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from api.context import ApiContext
from pixq import documents
from pixq.schemas import JobDocument

Model = TypeVar("Model", bound=BaseModel)


def render(model: type[Model], document: dict[str, Any]) -> dict[str, Any]:
    """``document`` as ``model`` publishes it (JSON-ready)."""
    return model.model_validate(document).model_dump(mode="json", exclude_unset=True)


def minter(ctx: ApiContext, request: web.Request) -> documents.Mint:
    """Download URLs for this request: signed links point back at the origin it came to."""
    return documents.download_minter(ctx.deps.storage, ctx.settings, str(request.url.origin()))


def public_status(ctx: ApiContext, request: web.Request, record: dict[str, Any]) -> dict[str, Any]:
    """The job's public document with fresh URLs (see pixq.documents.public_status)."""
    return render(JobDocument, documents.public_status(record, minter(ctx, request)))
