"""The queries that run every pass or status snapshot use an index, not a scan of
every task ever run (SQLite: EXPLAIN QUERY PLAN; PostgreSQL's plans depend on
table statistics, so this checks the embedded default)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from coordinator.models import Task

pytestmark = [pytest.mark.django_db,
              pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's query plans")]


def test_the_hot_queries_search_an_index_instead_of_scanning_the_history():
    hour_ago = timezone.now() - timedelta(hours=1)
    hot = {
        "pending tasks (every round)": Task.objects.filter(status=Task.Status.PENDING, cancel_requested=False)
        .order_by("-priority", "created_at"),
        "tasks holding a slot (status)": Task.objects.holding_slot(),
        "recent output lengths (scheduler estimate)": Task.objects.filter(status=Task.Status.COMPLETED)
        .order_by("-completed_at")[: 200],
        "finished in the last hour (status)": Task.objects.filter(
            status__in=Task.Status.finished(), completed_at__gte=hour_ago)
        .values_list("status").annotate(n=Count("id")).order_by(),
    }
    for name, queryset in hot.items():
        text = queryset.explain()
        assert "SEARCH tasks USING" in text and "SCAN tasks" not in text, f"{name} reads every task: {text}"
