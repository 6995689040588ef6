"""Typed storage errors; the HTTP layer maps each to a Kubernetes Status in one place."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every error the storage layer raises on purpose."""


class KeyNotFound(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key not found: {key}")
        self.key = key


class KeyExists(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key exists: {key}")
        self.key = key


class Conflict(StorageError):
    """The object changed since the caller read it (resourceVersion compare failed)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class PreconditionFailed(StorageError):
    """A delete/update precondition (uid or resourceVersion) did not hold."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class Expired(StorageError):
    """The requested revision is older than what is retained (compacted, or out of the cache window)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class TooLargeResourceVersion(StorageError):
    """The requested revision is newer than storage has seen within the wait budget."""

    def __init__(self, requested: int, current: int) -> None:
        super().__init__(f"Too large resource version: {requested}, current: {current}")
        self.requested = requested
        self.current = current


class InvalidContinue(StorageError):
    """A continue token that does not decode or does not belong to this list."""


class Unavailable(StorageError):
    """etcd cannot be reached (all endpoints failed) or timed out."""


class Compacted(StorageError):
    """Raised by the etcd client when a revision has been compacted away."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"required revision has been compacted (compact revision {compact_revision})")
        self.compact_revision = compact_revision
