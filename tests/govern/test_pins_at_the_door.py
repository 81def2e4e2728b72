"""The property the whole of governance rests on, through the real door on a real ledger:
for random pins and random operations, a call succeeds only if the caller's tier and pins
allow its capability and every resource it touches — and is refused, as evidence,
otherwise."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.errors import Forbidden
from keel.govern.policy import tier_may
from keel.ops.door import Caller

#: (operation, arguments, capability, resources it touches)
CALLS = [
    ("memory.capture", {"text": "x"}, "memory.write", {"surface": "capture"}),
    ("memory.remember", {"text": "x"}, "memory.write", {"surface": "working"}),
    ("memory.decide", {"title": "t", "why": "w"}, "memory.write", {"surface": "decision"}),
    ("memory.canon.set", {"name": "n", "text": "t"}, "canon.write", {"surface": "canon"}),
    ("memory.decisions", {}, "memory.read", {}),
    ("recall.search", {"query": "x"}, "recall.query", {}),
    ("cadence.list", {}, "cadence.read", {}),
    (
        "cadence.add",
        {"name": "p", "schedule": "every 1h", "kind": "probe", "run": "ok"},
        "cadence.write",
        {"job_kind": "probe"},
    ),
    ("schema.list", {}, "schema.read", {}),
    ("audit.list", {}, "audit.read", {}),
    ("identity.list", {}, "identity.read", {}),
    ("health.findings", {}, "health.read", {}),
]
CAPABILITIES = sorted({c for _, _, c, _ in CALLS})
SURFACES = ["capture", "working", "decision", "canon"]


def _toml_list(items) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    tier=st.sampled_from(["T1", "T2", "T3"]),
    granted=st.sets(st.sampled_from(CAPABILITIES)),
    surfaces=st.none() | st.sets(st.sampled_from(SURFACES)),
    job_kinds=st.none() | st.sets(st.sampled_from(["probe", "command"])),
    call=st.sampled_from(CALLS),
)
def test_a_call_succeeds_exactly_when_tier_and_pins_allow_it(
    keel_home, door, client, run, tier, granted, surfaces, job_kinds, call
):
    pin = f"capabilities = {_toml_list(sorted(granted))}\n"
    if surfaces is not None:
        pin += f"surfaces = {_toml_list(sorted(surfaces))}\n"
    if job_kinds is not None:
        pin += f"job_kinds = {_toml_list(sorted(job_kinds))}\n"
    text = (
        f'format = 1\n[identities.{keel_home.operator}]\ntier = "T0"\n'
        f'[identities.{client}]\ntier = "{tier}"\npins = ["p"]\n[pins.p]\n{pin}'
    )
    (keel_home.path / "canon" / "governance.toml").write_text(text)
    run("governance.sign")

    name, arguments, capability, touches = call
    expected = tier_may(tier, capability) and capability in granted
    if "surface" in touches:
        expected = expected and surfaces is not None and touches["surface"] in surfaces
    if "job_kind" in touches:
        expected = expected and job_kinds is not None and touches["job_kind"] in job_kinds

    def denials() -> int:
        trail = run("audit.list", capability=capability, who=client)
        return sum(e.kind == "denial" for e in trail)

    before = denials()
    try:
        door.call(name, arguments, Caller(client, "test"))
        allowed = True
    except Forbidden as exc:
        allowed = False
        assert exc.capability == capability and client in str(exc)
    assert allowed == expected, (tier, granted, surfaces, job_kinds, name)
    assert denials() - before == (0 if allowed else 1), name  # every refusal is evidence
