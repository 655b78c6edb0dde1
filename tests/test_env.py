"""The strict environment reader: a bad value stops start-up with its name, never a 500 later."""
from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from hive_project.env import env_rate


@pytest.mark.parametrize("value, expected", [("60/min", "60/min"), (" 5 / s ", "5/s"), ("100/hour", "100/hour")])
def test_a_rate_reads_as_drf_throttles_read_it(monkeypatch, value, expected):
    monkeypatch.setenv("HIVE_TEST_RATE", value)
    assert env_rate("HIVE_TEST_RATE", "1/min") == expected


@pytest.mark.parametrize("value", ["60", "per minute", "60/fortnight", "-1/min", "1.5/min"])
def test_a_malformed_rate_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("HIVE_TEST_RATE", value)
    with pytest.raises(ImproperlyConfigured, match="HIVE_TEST_RATE"):
        env_rate("HIVE_TEST_RATE", "1/min")
