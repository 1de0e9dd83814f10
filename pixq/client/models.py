"""What the client returns besides the API's own documents (those are pixq.schemas, re-exported).

Every answer is parsed into the server's models (pixq.schemas: responses ignore keys they do
not know, so an older client reads a newer server); these few describe results that are the
client's own composition of several calls or of a response's headers.
"""

from pydantic import BaseModel

from pixq.schemas import JobDocument


class Uploaded(BaseModel):
    """A finished direct upload: submit with ``UploadIdInput(upload_id=...)``."""

    upload_id: str
    storage_key: str | None
    expires_at: str


class JobVersion(BaseModel):
    """A conditional or long-poll read of a job: ``document`` is None when it did not change (304)."""

    document: JobDocument | None
    etag: str | None
    """Send it back as ``etag=`` to wait for the next change."""

    @property
    def modified(self) -> bool:
        return self.document is not None
