from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from agents.discovery import Target, TargetError, expand
from agents.models import Agent
from agents.simulator import SimulatedNode
from tests.processes import free_port


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        (["gpu1"], [("gpu1", 11434)]),
        (["gpu1:11500", "10.0.0.5"], [("gpu1", 11500), ("10.0.0.5", 11434)]),
        (["10.0.0.10-12"], [("10.0.0.10", 11434), ("10.0.0.11", 11434), ("10.0.0.12", 11434)]),
        (["10.0.0.254-10.0.1.1"], [("10.0.0.254", 11434), ("10.0.0.255", 11434), ("10.0.1.0", 11434),
                                   ("10.0.1.1", 11434)]),
        (["192.168.1.0/30"], [("192.168.1.1", 11434), ("192.168.1.2", 11434)]),
        (["10.0.0.1", "10.0.0.1:11434"], [("10.0.0.1", 11434)]),
    ],
)
def test_targets_expand_to_exactly_what_was_named(specs, expected):
    assert expand(specs) == [Target(h, p) for h, p in expected]


@pytest.mark.parametrize("specs", [["10.0.0.0/16"], ["10.0.0.20-10"], ["host:99999"], ["bad host!"], ["1.2.3.4/40"]])
def test_oversized_or_malformed_targets_are_refused(specs):
    with pytest.raises(TargetError):
        expand(specs, max_hosts=1024)


@pytest.mark.django_db
def test_it_finds_and_registers_simulated_nodes_on_loopback():
    port = free_port()
    nodes = [SimulatedNode(host=f"127.0.0.{n}", port=port, name=f"n{n}", models=["llama3.2:3b"]).start() for n in (2, 3)]
    try:
        Agent.objects.create(slug="known", name="known", endpoint=f"http://127.0.0.3:{port}")
        out = io.StringIO()
        call_command("discover_agents", "127.0.0.0/29", "--port", str(port), "--timeout", "0.5", stdout=out)
        text = out.getvalue()
        assert "Probing 6 endpoint(s)" in text and "6/6 probed" in text
        assert "2 Ollama endpoint(s) answered; 1 already registered." in text
        agent = Agent.objects.get(endpoint=f"http://127.0.0.2:{port}")
        assert agent.status == Agent.Status.ONLINE
        assert agent.available_model_names == ["llama3.2:3b"] and agent.model == "llama3.2:3b"
        assert Agent.objects.count() == 2
        again = io.StringIO()
        call_command("discover_agents", f"127.0.0.2:{port}", stdout=again)
        assert "1 already registered" in again.getvalue() and Agent.objects.count() == 2
    finally:
        for node in nodes:
            node.stop()


@pytest.mark.django_db
def test_a_dry_run_registers_nothing_and_bad_targets_are_a_clear_error():
    port = free_port()
    with SimulatedNode(host="127.0.0.2", port=port, name="dry"):
        out = io.StringIO()
        call_command("discover_agents", f"127.0.0.2:{port}", "--dry-run", stdout=out)
        assert "would register http://127.0.0.2:" in out.getvalue()
    assert Agent.objects.count() == 0
    with pytest.raises(CommandError, match="more than 16"):
        call_command("discover_agents", "10.0.0.0/24", "--max-hosts", "16")
