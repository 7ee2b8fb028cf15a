"""Schedule expressions as EventBridge Scheduler reads them, and when they fire.

Accepted from users:

- ``cron(MIN HOUR DOM MONTH DOW YEAR)``: EventBridge's six fields. One of DOM and DOW is ``?``;
  DOW counts 1-7 from Sunday (or SUN-SAT); ``*``, lists, ranges and ``/`` steps.
- ``0 3 * * 1``: classic five-field cron (DOW 0-7 from Sunday, 1 = Monday), turned into the
  EventBridge form (``cron(0 3 ? * 2 *)``) so that the cloud and this machine fire alike.
- ``rate(7 days)``: every N minutes, hours or days, counted from the schedule's creation.

``parse`` raises one UsageError line naming the bad part; ``next_fires`` gives the fire times
after a moment, in the schedule's time zone. Standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from orchestrator.errors import UsageError

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
_EXAMPLES = 'Examples: "0 3 * * 1" (Mondays 03:00), "cron(0 3 ? * MON *)", "rate(7 days)".'
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
# How far ahead next_fires looks before deciding an expression never fires (cron(0 0 30 2 ? *)).
_HORIZON_DAYS = 366 * 8


@dataclass(frozen=True)
class Expression:
    """A parsed expression. ``aws`` is the text EventBridge Scheduler accepts."""

    aws: str
    rate_seconds: int | None = None
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] | None = None  # None: '?'
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] | None = None  # 1-7 from Sunday; None: '?'
    years: frozenset[int] | None = None  # None: any year

    @property
    def is_rate(self) -> bool:
        return self.rate_seconds is not None

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months or (self.years is not None and day.year not in self.years):
            return False
        if self.days is not None and day.day not in self.days:
            return False
        weekday = (day.isoweekday() % 7) + 1  # Sunday 1 ... Saturday 7
        return self.weekdays is None or weekday in self.weekdays


def timezone(name: str | None) -> ZoneInfo:
    """A zoneinfo time zone; UsageError for an unknown name."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"Unknown time zone {name!r}.", "Use an IANA name such as Europe/Berlin, America/New_York or UTC."
        ) from None


def parse(text: str) -> Expression:
    """Parse a cron, classic cron or rate expression; UsageError with the bad part and an example."""
    text = " ".join((text or "").split())
    if not text:
        raise UsageError("The schedule expression is empty.", _EXAMPLES)
    rate = re.fullmatch(r"rate\((.*)\)", text, re.IGNORECASE)
    if rate:
        return _parse_rate(rate.group(1).strip(), text)
    cron = re.fullmatch(r"cron\((.*)\)", text, re.IGNORECASE)
    if cron:
        fields = cron.group(1).split()
        if len(fields) != 6:
            raise UsageError(
                f"{text!r} has {len(fields)} fields; cron(...) takes 6: minute hour day-of-month month"
                " day-of-week year.",
                _EXAMPLES,
            )
        return _parse_aws(fields, text)
    if text.lower().startswith("at("):
        raise UsageError(f"{text!r} is a one-time at() schedule; dl schedules recur.", _EXAMPLES)
    fields = text.split()
    if len(fields) != 5:
        raise UsageError(f"{text!r} is not a cron or rate expression.", _EXAMPLES)
    return _parse_aws(_classic_to_aws(fields, text), text)


def _parse_rate(body: str, text: str) -> Expression:
    match = re.fullmatch(r"(\d+)\s+(minute|minutes|hour|hours|day|days)", body, re.IGNORECASE)
    if not match or int(match.group(1)) < 1:
        raise UsageError(f"{text!r} is not a valid rate.", "Use rate(N minutes|hours|days), e.g. rate(7 days).")
    count, unit = int(match.group(1)), match.group(2).lower().rstrip("s")
    seconds = count * _RATE_UNITS[unit]
    aws = f"rate({count} {unit}{'' if count == 1 else 's'})"  # EventBridge wants '1 day', '7 days'
    return Expression(aws=aws, rate_seconds=seconds)


def _classic_to_aws(fields: list[str], text: str) -> list[str]:
    minute, hour, dom, month, dow = fields
    if "?" in (dom, dow):
        raise UsageError(f"{text!r}: '?' belongs to cron(...) expressions, not five-field cron.", _EXAMPLES)
    if dom != "*" and dow != "*":
        raise UsageError(
            f"{text!r} sets both day of month and day of week; EventBridge cannot fire on either.",
            "Set one of them to *.",
        )
    if dow == "*":
        return [minute, hour, dom, month, "?", "*"]
    return [minute, hour, "?", month, _shift_weekdays(dow, text), "*"]


def _shift_weekdays(field: str, text: str) -> str:
    """Classic cron's day of week (0-7, 0 and 7 = Sunday) in EventBridge's numbering (1-7 = SUN-SAT)."""
    classic = _field(field, 0, 7, "day of week", text, _DAYS)
    days = sorted({n % 7 + 1 for n in classic})
    if len(days) == 7:
        return "*"
    runs: list[list[int]] = []
    for day in days:
        if runs and day == runs[-1][-1] + 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ",".join(map(str, r)) for r in runs)


def _parse_aws(fields: list[str], text: str) -> Expression:
    minute, hour, dom, month, dow, year = fields
    if (dom == "?") == (dow == "?"):
        raise UsageError(
            f"{text!r}: exactly one of day-of-month and day-of-week must be '?'.",
            "Example: cron(0 3 ? * MON *) or cron(0 3 1 * ? *).",
        )
    this_year = datetime.now(UTC).year
    # '*/n' is written 'first/n' for EventBridge (0/15 for minutes, 1/2 for days).
    lows = (0, 0, 1, 1, 1, 1970)
    aws = [re.sub(r"^\*/", f"{low}/", f) for f, low in zip(fields, lows)]
    parsed = Expression(
        aws=f"cron({' '.join(aws)})",
        minutes=_field(minute, 0, 59, "minute", text),
        hours=_field(hour, 0, 23, "hour", text),
        days=None if dom == "?" else _field(dom, 1, 31, "day of month", text),
        months=_field(month, 1, 12, "month", text, _MONTHS),
        weekdays=None if dow == "?" else _field(dow, 1, 7, "day of week", text, _DAYS),
        years=None if year == "*" else _field(year, 1970, 2199, "year", text),
    )
    if parsed.years is not None and max(parsed.years) < this_year:
        raise UsageError(f"{text!r} only fires in years that have passed.", "Use * for the year.")
    return parsed


def _field(value: str, low: int, high: int, what: str, text: str, names: list[str] | None = None) -> frozenset[int]:
    def number(token: str) -> int:
        if names and token.upper() in names:
            return names.index(token.upper()) + low
        if "#" in token or token.upper() in ("L", "W", "LW") or token.upper().endswith(("L", "W")):
            raise UsageError(f"{text!r}: {token!r} (L, W, #) is not supported by dl.", "List the days instead.")
        if not token.isdigit():
            hint = f" (or {names[0]}-{names[-1]})" if names else ""
            raise UsageError(f"{text!r}: {token!r} is not a valid {what}.", f"Use {low}-{high}{hint}, *, a-b, */n.")
        n = int(token)
        if not low <= n <= high:
            raise UsageError(f"{text!r}: {what} {n} is out of range {low}-{high}.", _EXAMPLES)
        return n

    found: set[int] = set()
    for part in value.split(","):
        body, slash, step_text = part.partition("/")
        if slash and not step_text.isdigit() or step_text == "0":
            raise UsageError(f"{text!r}: {part!r} has a bad step.", "Example: */15.")
        step = int(step_text) if slash else 1
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start, end = number(first), number(last)
            if start > end:
                raise UsageError(f"{text!r}: range {body!r} runs backwards.", _EXAMPLES)
        else:
            start = number(body)
            end = high if slash else start
        found.update(range(start, end + 1, step))
    return frozenset(found)


def next_fires(
    expr: Expression | str, tz: str | None, after: datetime, n: int = 3, *, anchor: datetime | None = None
) -> list[datetime]:
    """The first ``n`` fire times strictly after ``after`` (aware datetimes in ``tz``).

    A rate fires every period from ``anchor`` (its creation; default ``after``). Wall-clock times
    that a daylight-saving jump skips do not fire; a repeated hour fires once.
    """
    expr = parse(expr) if isinstance(expr, str) else expr
    zone = timezone(tz)
    after = after.astimezone(zone)
    if expr.is_rate:
        start = (anchor or after).astimezone(UTC)
        period = timedelta(seconds=expr.rate_seconds)
        passed = max(0, int((after.astimezone(UTC) - start) // period))
        out, k = [], passed
        while len(out) < n:
            moment = start + k * period
            if moment > after:
                out.append(moment.astimezone(zone))
            k += 1
        return out
    out: list[datetime] = []
    day = after.date()
    end = day + timedelta(days=_HORIZON_DAYS)
    while len(out) < n and day <= end:
        if expr.matches_day(day):
            for hour in sorted(expr.hours):
                for minute in sorted(expr.minutes):
                    moment = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
                    real = moment.astimezone(UTC).astimezone(zone)
                    if real.replace(tzinfo=None) != moment.replace(tzinfo=None):
                        continue  # skipped by a daylight-saving jump
                    if moment > after:
                        out.append(moment)
                        if len(out) == n:
                            return out
        day += timedelta(days=1)
    if not out:
        raise UsageError(f"{expr.aws} never fires.", "Check the day of month against the months.")
    return out


def latest_due(
    expr: Expression, tz: str | None, since: datetime, now: datetime, *, anchor: datetime | None = None
) -> tuple[datetime | None, int]:
    """(the last fire time in ``(since, now]``, how many fire times fell in it); counting stops at 1000."""
    latest, count = None, 0
    cursor = since
    while count < 1000:
        try:
            batch = next_fires(expr, tz, cursor, 50, anchor=anchor)
        except UsageError:
            break
        for moment in batch:
            if moment > now:
                return latest, count
            latest, count = moment, count + 1
        cursor = batch[-1]
    # Many missed fire times (a minutely schedule after long downtime): look back from now instead.
    for back in (timedelta(hours=1), timedelta(days=1), timedelta(days=32), timedelta(days=400)):
        window = [m for m in _until(expr, tz, max(since, now - back), now, anchor) if m <= now]
        if window:
            return window[-1], count + len(window)
    return latest, count


def _until(expr: Expression, tz: str | None, start: datetime, now: datetime, anchor) -> list[datetime]:
    found, cursor = [], start
    while True:
        batch = next_fires(expr, tz, cursor, 200, anchor=anchor)
        found += [m for m in batch if m <= now]
        if batch[-1] > now or len(found) > 100_000:
            return found
        cursor = batch[-1]
