"""n8n conformance: every fixture whose node types are all registered must give n8n's output.

Fixtures needing unregistered node types are skipped (the reason names the types).
The terminal summary prints fixtures passed / supported / total.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.n8n_harness import fixture_files, fixture_id, load_fixture, run_fixture, unsupported_types

FILES = fixture_files()
_RESULTS: dict[str, str] = {}


def _expressions_missing() -> bool:
    return importlib.util.find_spec("workflows.engine.expressions") is None


def _uses_expressions(workflow: dict) -> bool:
    text = json.dumps([n.get("parameters", {}) for n in workflow.get("nodes", [])])
    return '"=' in text or "jsCode" in text or "functionCode" in text


@pytest.mark.parametrize("path", FILES, ids=[fixture_id(p) for p in FILES])
def test_fixture(path: Path) -> None:
    name = fixture_id(path)
    workflow = load_fixture(path)
    missing = unsupported_types(workflow)
    if missing:
        _RESULTS[name] = "unsupported"
        pytest.skip(f"node types not registered: {', '.join(missing)}")
    if _expressions_missing() and _uses_expressions(workflow):
        _RESULTS[name] = "unsupported"
        pytest.skip("workflows/engine/expressions.py is not there yet (the fixture uses expressions)")
    _RESULTS[name] = "failed"
    result = run_fixture(path)
    assert result.passed, result.explain()
    _RESULTS[name] = "passed"


def test_zz_coverage_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints fixtures passed / supported / total (runs last: its name sorts after the fixtures)."""
    total = len(FILES)
    supported = sum(1 for v in _RESULTS.values() if v != "unsupported")
    passed = sum(1 for v in _RESULTS.values() if v == "passed")
    lines = [f"n8n fixtures: {passed} passed / {supported} supported / {total} total"]
    for name in sorted(_RESULTS):
        lines.append(f"  {_RESULTS[name]:<12} {name}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
