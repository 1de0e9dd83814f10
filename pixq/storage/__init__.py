"""Object storage: the local filesystem (embedded default) or any S3 through the minio SDK."""

from pixq.settings import Settings
from pixq.storage.base import ObjectHead, PresignedPost, Storage
from pixq.storage.local import LocalStorage
from pixq.storage.s3 import S3Storage


def make_storage(settings: Settings) -> Storage:
    """The backend STORAGE_TYPE names."""
    if settings.storage_type == "minio":
        return S3Storage(settings)
    return LocalStorage(settings.storage_dir)


__all__ = ["ObjectHead", "PresignedPost", "Storage", "LocalStorage", "S3Storage", "make_storage"]
