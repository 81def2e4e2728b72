"""The governance file's rules, judged without a ledger: tiers bound what pins grant, pins
grant capabilities and resources, and everything not granted is denied."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.errors import BadInput
from keel.govern.governance import default_text
from keel.govern.policy import Policy, tier_may

OP = "operator"


def policy(body: str) -> Policy:
    return Policy.parse("format = 1\n" + body, OP)


def test_the_default_gives_a_client_memory_and_nothing_else():
    p = Policy.parse(default_text(OP), OP)
    for capability in ("memory.read", "recall.query"):
        assert p.decide("claude", OP, capability).allowed
    for surface in ("working", "entity", "observation", "capture", "episode", "decision"):
        resources = {"surface": [surface], "scope": ["claude"]}
        assert p.decide("claude", OP, "memory.write", resources).allowed, surface
    canon = p.decide("claude", OP, "memory.write", {"surface": ["canon"]})
    assert not canon.allowed and "canon" in canon.reason
    for capability in (
        "canon.write", "cadence.command", "cadence.write", "schema.write", "vault.import",
        "ledger.write", "branch.write", "identity.manage", "governance.write", "ledger.forget",
    ):  # fmt: skip
        decision = p.decide("claude", OP, capability)
        assert not decision.allowed, capability
        assert decision.reason in ("no pin grants it", "a T1 identity never holds it")
    assert p.decide(OP, OP, "governance.write").allowed  # the operator is T0
    assert p.rules_for("claude", OP).tier == "T1"


def test_tiers_bound_what_any_pin_grants():
    p = policy(
        """
[identities.reader]
tier = "T2"
pins = ["all"]
[identities.public]
tier = "T3"
pins = ["all"]
[identities.writer]
tier = "T1"
pins = ["all"]
[pins.all]
capabilities = ["*"]
surfaces = ["*"]
"""
    )
    assert p.decide("reader", OP, "memory.read").allowed
    assert p.decide("reader", OP, "audit.read").allowed
    refused = p.decide("reader", OP, "memory.write", {"surface": ["capture"]})
    assert not refused.allowed and "T2" in refused.reason
    assert not p.decide("public", OP, "memory.read").allowed
    assert p.decide("public", OP, "public.read").allowed
    assert p.decide("writer", OP, "cadence.write").allowed
    for capability in ("governance.write", "governance.read", "identity.manage", "secret.manage"):
        assert not p.decide("writer", OP, capability).allowed, capability
    assert [t for t in ("T0", "T1", "T2", "T3") if tier_may(t, "memory.write")] == ["T0", "T1"]


def test_resources_are_each_allowed_by_one_pin_or_denied():
    p = policy(
        """
[identities.ops]
pins = ["runner", "notes"]
[pins.runner]
capabilities = ["cadence.command", "cadence.write"]
job_kinds = ["command", "probe"]
commands = [
  { path = "/usr/bin/git", args = "status|log|--oneline|-n|[0-9]+" },
  { path = "/bin/sh", args = ".*", max_args = 2 },
]
files = ["/home/me/notes"]
hosts = ["*.example.com"]
[pins.notes]
capabilities = ["memory.write"]
surfaces = ["capture"]
scopes = ["shared/*"]
"""
    )

    def may(capability: str, **resources) -> bool:
        return p.decide("ops", OP, capability, resources).allowed

    git = "/usr/bin/git"
    assert may("cadence.command", job_kind=["command"], command=[[git, "log", "-n", "5"]])
    assert not may("cadence.command", command=[[git, "push"]])
    assert not may("cadence.command", command=[["git", "status"]])  # not an absolute path
    assert not may("cadence.command", command=[["/usr/local/bin/git", "status"]])
    assert may("cadence.command", command=[["/bin/sh", "-c", "anything | at all"]])
    assert not may("cadence.command", command=[["/bin/sh", "-c", "x", "y"]])  # max_args
    assert not may("cadence.command", job_kind=["agent"])
    assert may("cadence.write", file=["/home/me/notes/a/../b.md"])
    assert not may("cadence.write", file=["/home/me/notes/../secrets"])
    assert not may("cadence.write", file=["/home/me/notes-evil/x"])
    assert may("cadence.write", host=["api.example.com"])
    assert not may("cadence.write", host=["example.com.evil.org"])
    # The kind a pin leaves out is denied, naming it.
    refused = p.decide("ops", OP, "memory.write", {"surface": ["capture"], "host": ["x"]})
    assert not refused.allowed and "hosts" in refused.reason
    # Working memory: one's own scopes always, others only as a pin grants.
    assert may("memory.write", surface=["capture"], scope=["ops"])
    assert may("memory.write", surface=["capture"], scope=["ops/run-7"])
    assert may("memory.write", surface=["capture"], scope=["shared/team"])
    assert not may("memory.write", surface=["capture"], scope=["claude"])
    assert not may("memory.write", surface=["capture"], scope=["opsx"])


@pytest.mark.parametrize(
    "body, words",
    [
        ("[identities.x]\npins = ['nope']", "does not define"),
        ("[identities.operator]\ntier = 'T1'", "must stay T0"),
        ("[defaults]\ntier = 'T0'", "defaults cannot be T0"),
        ("[pins.p]\ncapabilities = ['Memory Write']", "is not a capability"),
        ("[pins.p]\ncommands = [{ path = 'git' }]", "absolute"),
        ("[pins.p]\ncommands = [{ path = '/bin/x', args = '(' }]", "regular expression"),
        ("[pins.p]\nfiles = ['notes']", "absolute"),
        ("[identities.x]\ntier = 'T9'", "identities.x.tier"),
        ("surprise = 1", "surprise"),
        ("approval_expiry = '0s'", "1m to 366d"),
        ("[pins.p", "not valid TOML"),
    ],
)
def test_a_bad_file_is_one_sentence(body, words):
    with pytest.raises(BadInput) as caught:
        policy(body)
    message = str(caught.value)
    assert words in message and "\n" not in message


def test_a_file_without_its_format_is_refused():
    with pytest.raises(BadInput, match="format"):
        Policy.parse("[pins.p]\n", OP)


CAPABILITIES = ["memory.read", "memory.write", "cadence.write", "cadence.command", "audit.read"]


@settings(max_examples=200, deadline=None)
@given(
    granted=st.lists(st.sampled_from([*CAPABILITIES, "memory.*", "*"]), max_size=4),
    tier=st.sampled_from(["T1", "T2", "T3"]),
    asked=st.sampled_from(CAPABILITIES),
)
def test_a_capability_is_allowed_only_when_tier_and_pin_both_allow_it(granted, tier, asked):
    lines = ", ".join(f'"{c}"' for c in granted)
    p = policy(f'[identities.x]\ntier = "{tier}"\npins = ["p"]\n[pins.p]\ncapabilities = [{lines}]')
    pinned = any(
        c == asked or c == "*" or (c == "memory.*" and asked.startswith("memory.")) for c in granted
    )
    readable = asked.endswith(".read")
    tier_allows = tier == "T1" or (tier == "T2" and readable)
    assert p.decide("x", OP, asked).allowed == (pinned and tier_allows)


def test_a_node_acts_as_the_operators_machine_unless_the_file_names_it():
    """A node joined with the operator's signature: T0 by default, like the operator; the
    file can still give it less."""

    policy = Policy.parse(default_text("operator"), "operator")
    assert policy.rules_for("laptop", "operator", "node").tier == "T0"
    assert policy.rules_for("laptop", "operator", "agent").tier == "T1"
    named = Policy.parse(
        default_text("operator") + '\n[identities.laptop]\ntier = "T2"\n', "operator"
    )
    assert named.rules_for("laptop", "operator", "node").tier == "T2"
