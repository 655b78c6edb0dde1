"""Domain errors raised by services; the API maps them to HTTP, the admin to messages."""
from __future__ import annotations


class ConflictError(Exception):
    """The request is valid but the object's current state does not allow it (409)."""
