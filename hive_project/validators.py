from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError


def validate_no_nul(value: Any) -> None:
    """PostgreSQL's jsonb (and text) cannot hold NUL; refuse it as bad input, not a 500."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValidationError("must not contain NUL (\\u0000) characters")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
