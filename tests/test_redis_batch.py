"""hive_project.redis_client.Batch: commands and scripts in one round trip, against real Redis."""
from __future__ import annotations

import pytest
import redis

from hive_project.redis_client import Batch, get_redis

INCR_BY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def test_commands_and_scripts_run_in_order_and_hand_their_results_on():
    seen: list[object] = []
    batch = Batch()
    batch.command("SET", "batch:a", 5)
    batch.script(INCR_BY, ["batch:a"], [2], then=seen.append)
    batch.command("GET", "batch:a", then=seen.append)

    assert batch.execute() == [True, 7, b"7"]
    assert seen == [7, b"7"]
    assert len(batch) == 0, "a batch is empty after it ran"


def test_a_script_redis_forgot_is_loaded_again_and_run_exactly_once():
    client = get_redis()
    first = Batch()
    first.script(INCR_BY, ["batch:b"], [0])
    first.execute()  # this process has loaded the script now
    client.script_flush()  # as after a Redis restart
    batch = Batch()
    batch.script(INCR_BY, ["batch:b"], [1])
    batch.script(INCR_BY, ["batch:b"], [10])

    assert batch.execute() == [1, 11]
    assert int(client.get("batch:b")) == 11


def test_an_error_is_raised_after_the_other_calls_ran():
    seen: list[object] = []
    batch = Batch()
    batch.command("SET", "batch:c", "text")
    batch.command("INCR", "batch:c", then=seen.append)
    batch.command("SET", "batch:d", 1, then=seen.append)

    with pytest.raises(redis.exceptions.ResponseError):
        batch.execute()
    assert seen == [True] and get_redis().get("batch:d") == b"1"
