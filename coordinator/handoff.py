"""Handing a slot straight to its next task: an execution that finishes starts the
task the last scheduling round said should have that slot next, in the same process.

Without it, a finished task's slot waits for a round trip: completion -> pass request
-> scheduling round (at most every HIVE_PASS_INTERVAL) -> execution message -> a worker
process picks it up. With agents whose slots are all busy that round trip is most of
a short task's life. So every round that leaves tasks waiting for a busy agent's slot
*reserves* them: per agent, an ordered list in Redis of the tasks it decided should
take that agent's next free slots (its own walk in schedule order, nothing else). A
finishing execution on that agent pops the head and claims the task itself
(pending -> running, a conditional update like any claim) instead of asking for a pass.

The handoff must never break the one ordering rule (a waiting higher-priority task is
never passed over), so a reservation only holds while nothing the round did not see
could outrank it:

* Every pass request says what it brings: a submission the best *order key* among its
  new tasks (priority minus aging; see ``order_key``), a completion nothing (it only
  frees a slot, unless tasks depend on it), anything else (a retry, a cancel, an edited
  or pinned task, an agent that changed) ``inf``. Each is stored in a sorted set under
  a sequence number taken after the change committed.
* A round reads the sequence number before it reads the database, and tags its
  reservations with it. A reservation is refused when anything with a later sequence
  number could outrank it, when it was written by an older round, or when it needs a
  cold load (model loads are the round's business); a refusal drops that agent's whole
  list, so a later pop cannot skip the refused task either. The next round (the
  completion asked for one) decides again.

A process takes a reservation only if its worker consumes the task's priority queue
(it leaves it in place otherwise), so workers dedicated to one queue keep to it.

Reservations are hints, the database stays the truth: a popped task that is no longer
pending is skipped, and when Redis loses the lists (flushed, restarted) executions
simply fall back to asking for a pass.
"""
from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Any

import redis
from django.conf import settings

from hive_project.redis_client import get_redis, script

SEQ_KEY = "hive:pending:seq"
NEWS_KEY = "hive:pending:news"  # sorted set: score = sequence number, member = "<seq>:<order key or inf>"
ROUND_KEY = "hive:handoff:round"  # the sequence number the live reservations were made at
LIST_PREFIX = "hive:handoff:agent:"
STOPPING_PREFIX = "hive:handoff:stopping:"  # a worker shutting down takes no more handoffs
# Reservations older than this are ignored (a round refreshes them many times a second under load).
RESERVATION_TTL = 30
# News outlives every reservation made before it (see the checks in _TAKE).
NEWS_TTL = 2 * RESERVATION_TTL
# A finishing execution tries at most this many popped reservations that turn out to
# be taken already (a round dispatched them, another execution took them).
MAX_POPS = 16


def list_key(agent_id: Any) -> str:
    return f"{LIST_PREFIX}{agent_id}"


# The execution queues this worker process consumes (set in the worker's main process
# before the pool forks; None outside a worker: any). A reservation is taken only by a
# process that could have received its task's message, so workers dedicated to the
# high-priority queue are never tied up by low-priority work handed to them.
consumed_queues: frozenset[str] | None = None


def stopping_key(worker: str) -> str:
    return f"{STOPPING_PREFIX}{worker}"


def order_key(priority: int, created_at: datetime) -> float:
    """A task's place in the schedule order as one number that does not change as time
    passes: its effective priority minus the aging every waiting task gains alike.
    Higher goes first, so a task may pass over a reservation only if its key is higher."""
    return priority - settings.HIVE_AGING_PER_MINUTE * created_at.timestamp() / 60.0


def news_arg(news: float | None) -> str:
    """How a pass request's news travels to Redis: '' nothing that could outrank a
    reservation, 'inf' anything might, else the best order key it brings."""
    if news is None:
        return ""
    return "inf" if math.isinf(news) else repr(float(news))


def round_state() -> tuple[int, int | None]:
    """(The sequence number now, the one the live reservations were made at, if any).
    Read by a round before it reads the database: news numbered after it is news to it."""
    now, reserved = get_redis().mget(SEQ_KEY, ROUND_KEY)
    return int(now or 0), int(reserved) if reserved is not None else None


def reserve_in(pipe: Any, seq: int, agent_ids: list[Any],
               reservations: dict[Any, list[tuple[uuid.UUID, str, bool, float, str]]]) -> None:
    """Replace the reservations with a round's, as part of ``pipe`` (a MULTI pipeline):
    for each agent it saw, the tasks that wait for its slots in the order they should
    get them, as (task id, model, needs a cold load, order key, execution queue)."""
    for agent_id in agent_ids:
        key = list_key(agent_id)
        pipe.delete(key)
        entries = reservations.get(agent_id)
        if entries:
            pipe.rpush(key, *(f"{seq}|{task}|{int(cold)}|{order!r}|{queue}|{model}"
                              for task, model, cold, order, queue in entries))
            pipe.expire(key, RESERVATION_TTL)
    pipe.set(ROUND_KEY, seq, ex=RESERVATION_TTL)
    pipe.zremrangebyscore(NEWS_KEY, "-inf", seq)


_TAKE = """
if redis.call('EXISTS', KEYS[4]) == 1 then return false end
local entry = redis.call('LINDEX', KEYS[1], 0)
if not entry then return false end
local tag, task, cold, key, queue, model = string.match(entry, '^(%d+)|([^|]+)|([01])|([^|]+)|([^|]+)|(.*)$')
if tag ~= nil and #ARGV > 0 then
  local ours = false
  for _, consumed in ipairs(ARGV) do if consumed == queue then ours = true end end
  if not ours then return false end  -- left in place for a process that may run it
end
redis.call('LPOP', KEYS[1])
if tag == nil or tag ~= redis.call('GET', KEYS[2]) or cold == '1' then
  redis.call('DEL', KEYS[1])
  return false
end
local mine = tonumber(key)
for _, news in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. tag, '+inf')) do
  local value = string.match(news, ':(.*)$')
  if value == 'inf' or tonumber(value) > mine then
    redis.call('DEL', KEYS[1])
    return false
  end
end
return {task, model}
"""


def take(agent_id: Any, worker: str) -> tuple[str, str] | None:
    """The next task reserved for ``agent_id``'s slots, as (task id, model), if it may
    start now; None otherwise (the completion's pass request then places the work)."""
    found = script(_TAKE)(keys=[list_key(agent_id), ROUND_KEY, NEWS_KEY, stopping_key(worker)],
                          args=sorted(consumed_queues or ()))
    if not found:
        return None
    task_id, model = found
    return task_id.decode(), model.decode()


def drop(agent_id: Any) -> None:
    """Forget an agent's reservations (one was popped and could not be used)."""
    get_redis().delete(list_key(agent_id))


def worker_stopping(worker: str) -> None:
    """A worker shutting down finishes what it runs and takes nothing more.

    Called from the worker's signal handler: a client of its own (no lock shared with
    whatever the handler interrupted) and short timeouts (Redis may be gone already)."""
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.set(stopping_key(worker), 1, ex=settings.HIVE_TASK_TIME_LIMIT + 60)
    finally:
        client.close()


def worker_started(worker: str) -> None:
    get_redis().delete(stopping_key(worker))
