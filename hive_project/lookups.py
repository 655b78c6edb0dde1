from __future__ import annotations

import re
import uuid

from django.db.models import Model, QuerySet
from django.http import Http404

SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")


def by_id_or_slug(queryset: QuerySet, value: str, *, what: str) -> Model:
    """Agents are addressed by UUID or by their short id ('acacia')."""
    try:
        return queryset.get(pk=uuid.UUID(str(value)))
    except (ValueError, queryset.model.DoesNotExist):
        pass
    if not SLUG.match(str(value)):
        raise Http404(f"No {what} with id '{value}'.")
    try:
        return queryset.get(slug=value)
    except queryset.model.DoesNotExist:
        raise Http404(f"No {what} with id '{value}'.") from None
