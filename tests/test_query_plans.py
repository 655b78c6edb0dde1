"""The queries that run every pass or status snapshot can use an index instead of
reading every task ever run.

SQLite: EXPLAIN QUERY PLAN must show an index search (this failed before migration
0003: SQLite never used the old partial index). PostgreSQL picks sequential scans for
the tiny tables of a test, so there sequential scans are priced out
(``enable_seqscan = off``) and the plan must still search an index: the weaker check,
as PostgreSQL can also search a composite index by a later column.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from coordinator.models import Task

pytestmark = pytest.mark.django_db


def hot_queries() -> dict[str, object]:
    hour_ago = timezone.now() - timedelta(hours=1)
    return {
        "pending tasks (every round)": Task.objects.filter(status=Task.Status.PENDING, cancel_requested=False)
        .order_by("-priority", "created_at"),
        "tasks holding a slot (status)": Task.objects.holding_slot(),
        "recent output lengths (scheduler estimate)": Task.objects.filter(status=Task.Status.COMPLETED)
        .order_by("-completed_at")[: 200],
        "finished in the last hour (status)": Task.objects.filter(
            status__in=Task.Status.finished(), completed_at__gte=hour_ago)
        .values_list("status").annotate(n=Count("id")).order_by(),
    }


def uses_an_index(text: str) -> bool:
    if connection.vendor == "sqlite":
        return "SEARCH tasks USING" in text and "SCAN tasks" not in text
    return "Index Cond" in text and "Seq Scan on tasks" not in text  # an index searched, not walked whole


def test_the_hot_queries_search_an_index_instead_of_scanning_the_history():
    for name, queryset in hot_queries().items():
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL enable_seqscan = off")
            text = queryset.explain()  # type: ignore[attr-defined]
        assert uses_an_index(text), f"{name} reads every task: {text}"


def test_the_handoff_slot_check_searches_indexes_too():
    from agents.models import Agent
    from coordinator import executor
    from tests.factories import make_agent, make_task

    agent = make_agent()
    task = make_task(status=Task.Status.RUNNING, assigned_agent=agent)
    params = [Agent._meta.pk.get_db_prep_value(agent.pk, connection)] * 2 + [
        Task._meta.pk.get_db_prep_value(task.pk, connection)]
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(("EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN ")
                       + executor._slot_state_sql(), params)
        text = "\n".join(str(row[-1]) for row in cursor.fetchall())
    assert uses_an_index(text), f"the slot check reads every task: {text}"
    assert "SCAN task_dependencies" not in text and "Seq Scan on task_dependencies" not in text, text
