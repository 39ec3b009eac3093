"""Storage's named errors, under the domain root (moltbot/errors.py)."""

from __future__ import annotations

from moltbot.errors import MoltbotError


class StorageError(MoltbotError):
    """A read or write of stored data that could not be done."""


class StorageFullError(StorageError):
    """The disk (or the database server's) is full: nothing was written."""


class StorageBusyError(StorageError):
    """The database stayed locked past its timeout."""
