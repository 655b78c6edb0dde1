"""Queue names in one place. Renaming one strands messages already queued under it."""
from __future__ import annotations

HIGH = "hive.high"
MEDIUM = "hive.medium"
LOW = "hive.low"
CONTROL = "hive.control"
# Workflow executions wait on LLM tasks for minutes; sharing the control queue would
# block the scheduling passes that place those very tasks.
WORKFLOWS = "hive.workflows"

EXECUTION_QUEUES = (HIGH, MEDIUM, LOW)
ALL_QUEUES = (HIGH, MEDIUM, LOW, CONTROL, WORKFLOWS)


def queue_for_priority(priority: int) -> str:
    """Priority 5 is the most urgent: 4-5 run on high, 3 on medium, 1-2 on low."""
    if priority >= 4:
        return HIGH
    if priority == 3:
        return MEDIUM
    return LOW
