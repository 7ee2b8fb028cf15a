"""Schedule expressions: parsing, conversion to EventBridge's form, and next fire times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator import cronexpr
from orchestrator.errors import UsageError

WED_NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("given", "aws"),
    [
        ("0 3 * * 1", "cron(0 3 ? * 2 *)"),  # Mondays: classic 1 is EventBridge's 2
        ("0 3 * * 0", "cron(0 3 ? * 1 *)"),  # Sunday as 0 ...
        ("0 3 * * 7", "cron(0 3 ? * 1 *)"),  # ... and as 7
        ("0 9 * * 1-5", "cron(0 9 ? * 2-6 *)"),
        ("0 0 * * 5-7", "cron(0 0 ? * 1,6,7 *)"),
        ("0 0 * * MON,FRI", "cron(0 0 ? * 2,6 *)"),
        ("0 0 1 * *", "cron(0 0 1 * ? *)"),
        ("*/15 * * * *", "cron(0/15 * * * ? *)"),
        ("30 2 * * *", "cron(30 2 * * ? *)"),
        ("cron(0 3 ? * MON *)", "cron(0 3 ? * MON *)"),
        ("cron(0 */2 ? * * *)", "cron(0 0/2 ? * * *)"),
        ("  cron(0   3 1 *  ? 2030-2035) ", "cron(0 3 1 * ? 2030-2035)"),
        ("rate(7 days)", "rate(7 days)"),
        ("rate(1 days)", "rate(1 day)"),
        ("rate(1 minute)", "rate(1 minute)"),
        ("RATE(2 Hours)", "rate(2 hours)"),
    ],
)
def test_expressions_become_eventbridge_expressions(given, aws):
    assert cronexpr.parse(given).aws == aws


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("", "empty"),
        ("0 3 * *", "not a cron or rate"),
        ("0 3 * * 1 *", "not a cron or rate"),
        ("cron(0 3 * * *)", "takes 6"),
        ("cron(0 3 * * * *)", "exactly one of"),
        ("cron(0 3 ? * ? *)", "exactly one of"),
        ("61 * * * *", "minute 61 is out of range"),
        ("0 24 * * *", "hour 24 is out of range"),
        ("0 0 * 13 *", "month 13"),
        ("0 0 * * 8", "out of range"),
        ("0 0 1 * 1", "both day of month and day of week"),
        ("0 0 ? * 1", "'?' belongs to cron"),
        ("cron(0 3 ? * 2#1 *)", "not supported"),
        ("cron(0 3 L * ? *)", "not supported"),
        ("0 0 5-1 * *", "runs backwards"),
        ("*/0 * * * *", "bad step"),
        ("x 3 * * *", "'x' is not a valid minute"),
        ("rate(0 days)", "not a valid rate"),
        ("rate(3 weeks)", "not a valid rate"),
        ("at(2026-12-01T00:00:00)", "one-time"),
        ("cron(0 0 1 1 ? 2001)", "passed"),
    ],
)
def test_bad_expressions_are_one_clear_error(bad, says):
    with pytest.raises(UsageError) as caught:
        cronexpr.parse(bad)
    assert says in caught.value.message
    assert "\n" not in str(caught.value)


def test_weekly_cron_in_berlin():
    fires = cronexpr.next_fires("0 3 * * 1", "Europe/Berlin", WED_NOON)
    assert [f.isoformat() for f in fires] == [
        "2026-11-30T03:00:00+01:00",
        "2026-12-07T03:00:00+01:00",
        "2026-12-14T03:00:00+01:00",
    ]


def test_fire_times_are_strictly_after():
    at_fire = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # 03:00 in Berlin, exactly a fire time
    assert cronexpr.next_fires("0 3 * * 1", "Europe/Berlin", at_fire, 1)[0].date().isoformat() == "2026-12-07"


def test_weekday_names_and_ranges_fire_on_those_days():
    fires = cronexpr.next_fires("cron(0 9 ? * MON-FRI *)", "UTC", WED_NOON, 5)
    assert [f.strftime("%a") for f in fires] == ["Thu", "Fri", "Mon", "Tue", "Wed"]


def test_every_15_minutes():
    fires = cronexpr.next_fires("*/15 * * * *", "UTC", WED_NOON, 3)
    assert [f.strftime("%H:%M") for f in fires] == ["12:15", "12:30", "12:45"]


def test_daylight_saving_gap_is_skipped_and_repeat_fires_once():
    # Berlin springs forward at 02:00 on 2026-03-29: 02:30 does not exist that day.
    spring = cronexpr.next_fires("30 2 * * *", "Europe/Berlin", datetime(2026, 3, 28, 12, tzinfo=UTC), 2)
    assert [f.date().isoformat() for f in spring] == ["2026-03-30", "2026-03-31"]
    # Falls back at 03:00 on 2026-10-25: 02:30 happens twice, fires once.
    autumn = cronexpr.next_fires("30 2 * * *", "Europe/Berlin", datetime(2026, 10, 24, 12, tzinfo=UTC), 2)
    assert [f.date().isoformat() for f in autumn] == ["2026-10-25", "2026-10-26"]


def test_rate_counts_from_its_anchor():
    anchor = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    fires = cronexpr.next_fires("rate(7 days)", "UTC", WED_NOON, 2, anchor=anchor)
    assert [f.isoformat() for f in fires] == ["2026-11-29T08:00:00+00:00", "2026-12-06T08:00:00+00:00"]
    assert cronexpr.next_fires("rate(2 hours)", "UTC", WED_NOON, 1)[0] == WED_NOON + timedelta(hours=2)


def test_impossible_dates_never_fire():
    with pytest.raises(UsageError, match="never fires"):
        cronexpr.next_fires("0 0 30 2 *", "UTC", WED_NOON)


def test_unknown_time_zone():
    with pytest.raises(UsageError, match="Unknown time zone") as caught:
        cronexpr.next_fires("0 3 * * 1", "Mars/Olympus", WED_NOON)
    assert "Europe/Berlin" in caught.value.hint


def test_latest_due_counts_missed_fire_times():
    expr = cronexpr.parse("0 * * * *")
    since = datetime(2026, 11, 25, 0, 30, tzinfo=UTC)
    latest, count = cronexpr.latest_due(expr, "UTC", since, WED_NOON)
    assert latest == WED_NOON and count == 12
    assert cronexpr.latest_due(expr, "UTC", WED_NOON, WED_NOON + timedelta(minutes=59)) == (None, 0)


def test_latest_due_after_long_downtime_is_the_last_one():
    expr = cronexpr.parse("* * * * *")  # every minute, down for a month
    latest, count = cronexpr.latest_due(expr, "UTC", WED_NOON - timedelta(days=30), WED_NOON)
    assert latest == WED_NOON and count >= 1000
