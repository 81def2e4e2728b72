"""Schedules a new user writes: cron macros (`@daily`) in the job's zone, and cron errors that
name the field at fault in one sentence."""

from __future__ import annotations

import pytest

from keel.cadence.jobs import parse_job
from keel.cadence.kinds import KINDS
from keel.cadence.schedule import parse_schedule
from keel.ledger import BadInput
from keel.ledger.instants import format_instant, parse_instant

US = 1_000_000
DAY = 86400 * US


def fires(schedule, start: str, count: int) -> list[str]:
    """The first `count` fires after `start`, as UTC instants."""
    out, t = [], parse_instant(start)
    for _ in range(count):
        t = schedule.next_after(t)
        out.append(format_instant(t))
    return out


def fires_within(schedule, start: int, end: int) -> list[int]:
    out, t = [], start
    while (t := schedule.next_after(t)) is not None and t <= end:
        out.append(t)
    return out


# (macro, zone, after, the next three fires in UTC)
MACRO_FIRES = [
    # Local midnight in Berlin is 23:00Z in winter (CET) and 22:00Z in summer (CEST).
    (
        "@daily",
        "Europe/Berlin",
        "2026-03-27T12:00:00Z",
        ["2026-03-27T23:00:00Z", "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"],
    ),
    (
        "@midnight",
        "Europe/Berlin",
        "2026-03-27T12:00:00Z",
        ["2026-03-27T23:00:00Z", "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"],
    ),
    # New York's fall-back night: 01:00 EDT fires, the repeated 01:00 EST does not.
    (
        "@hourly",
        "America/New_York",
        "2026-11-01T04:30:00Z",
        ["2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z", "2026-11-01T08:00:00Z"],
    ),
    # Sunday midnight in Tokyo (UTC+9) is Saturday 15:00Z.
    (
        "@weekly",
        "Asia/Tokyo",
        "2026-01-05T00:00:00Z",
        ["2026-01-10T15:00:00Z", "2026-01-17T15:00:00Z", "2026-01-24T15:00:00Z"],
    ),
    (
        "@monthly",
        "America/New_York",
        "2026-01-15T00:00:00Z",
        ["2026-02-01T05:00:00Z", "2026-03-01T05:00:00Z", "2026-04-01T04:00:00Z"],
    ),
    (
        "@yearly",
        "America/New_York",
        "2026-06-01T00:00:00Z",
        ["2027-01-01T05:00:00Z", "2028-01-01T05:00:00Z", "2029-01-01T05:00:00Z"],
    ),
    (
        "@annually",
        "UTC",
        "2026-06-01T00:00:00Z",
        ["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z", "2029-01-01T00:00:00Z"],
    ),
]


@pytest.mark.parametrize("macro, tz, after, expected", MACRO_FIRES)
def test_cron_macros_fire_in_the_jobs_zone(macro, tz, after, expected):
    schedule = parse_schedule(macro, tz)
    assert (schedule.kind, schedule.to_text(), schedule.tz) == ("cron", macro, tz)
    assert fires(schedule, after, 3) == expected


@pytest.mark.parametrize(
    "macro, line",
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
    ],
)
def test_a_macro_fires_as_its_cron_line_through_a_year_of_dst(macro, line):
    """Through a whole year in a zone with DST, both changes included."""
    start = parse_instant("2026-01-01T00:00:00Z")
    end = start + 366 * DAY
    if macro == "@hourly":
        end = start + 120 * DAY  # past the spring change, in fewer steps
    tz = "America/New_York"
    assert fires_within(parse_schedule(macro, tz), start, end) == fires_within(
        parse_schedule(line, tz), start, end
    )


def test_macro_spellings_and_jobs():
    assert parse_schedule("@DAILY", "UTC") == parse_schedule("@daily", "UTC")
    assert parse_schedule("cron @daily", "UTC") == parse_schedule("@daily", "UTC")
    spec = parse_job(
        {"name": "nightly", "schedule": "@daily", "tz": "Europe/Berlin", "run": "true"},
        set(KINDS),
    )
    assert fires(spec.parsed_schedule(), "2026-07-01T12:00:00Z", 1) == ["2026-07-01T22:00:00Z"]


def test_every_and_at_are_unchanged_by_macros():
    every = parse_schedule("every 30m", "Europe/Berlin")
    assert (every.kind, every.expr) == ("every", "30m")
    at = parse_schedule("at 2026-12-01T09:00", "Europe/Berlin")
    assert fires(at, "2026-11-01T00:00:00Z", 1) == ["2026-12-01T08:00:00Z"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("61 * * * *", "'61 * * * *': the minute field '61' is not valid (0-59)"),
        ("0,61 * * * *", "'0,61 * * * *': the minute field '0,61' is not valid (0-59)"),
        ("*/0 * * * *", "'*/0 * * * *': the minute field '*/0' is not valid (0-59)"),
        ("0 25 * * *", "'0 25 * * *': the hour field '25' is not valid (0-23)"),
        ("0 9 0 * *", "'0 9 0 * *': the day-of-month field '0' is not valid (1-31)"),
        ("0 9 * 13 *", "'0 9 * 13 *': the month field '13' is not valid (1-12 or JAN-DEC)"),
        ("0 9 * * 8", "'0 9 * * 8': the day-of-week field '8' is not valid (0-7 or SUN-SAT)"),
        (
            "0 9 * * FUN",
            "'0 9 * * FUN': the day-of-week field 'FUN' is not valid (0-7 or SUN-SAT)",
        ),
        (
            "* * * *",
            "'* * * *' has 4 fields, but a cron line has 5: minute hour day-of-month month"
            " day-of-week (e.g. '0 9 * * 1-5')",
        ),
        (
            "0 9 * * * *",
            "'0 9 * * * *' has 6 fields, but a cron line has 5: minute hour day-of-month month"
            " day-of-week (e.g. '0 9 * * 1-5')",
        ),
        (
            "whenever",
            "'whenever' is not a schedule: use a cron line ('0 9 * * 1-5'), a macro ('@daily'),"
            " 'every 30m' or 'at 2026-12-01T09:00'",
        ),
        (
            "@reboot",
            "'@reboot' is not a cron macro keel runs (@hourly, @daily, @midnight, @weekly,"
            " @monthly, @yearly, @annually)",
        ),
        ("0 0 31 2 *", "'0 0 31 2 *' matches no date, so it would never fire"),
    ],
)
def test_cron_errors_name_the_field_in_one_sentence(text, message):
    with pytest.raises(BadInput) as err:
        parse_schedule(text, "UTC")
    assert str(err.value) == message
    # A job with that schedule is refused with the same sentence.
    with pytest.raises(BadInput) as err:
        parse_job({"name": "j", "schedule": text, "tz": "UTC", "run": "true"}, set(KINDS))
    assert str(err.value) == message
