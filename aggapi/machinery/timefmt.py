"""Time as Kubernetes shows it: metav1.Time's RFC 3339 form and kubectl's AGE column."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_NS_PER_SECOND = 1_000_000_000
_NS_PER_MINUTE = 60 * _NS_PER_SECOND
_NS_PER_HOUR = 60 * _NS_PER_MINUTE


def human_duration(seconds: float) -> str:
    """apimachinery duration.HumanDuration: ~2-3 significant figures ("70s", "3m10s", "2d1h", "2y1d").

    Like kube, up to 2 s in the future (clock skew) still reads "0s"; further is "<invalid>".
    """
    ns = round(seconds * _NS_PER_SECOND)
    whole_seconds = int(ns / _NS_PER_SECOND)  # Go's int(d.Seconds()) truncates toward zero
    if whole_seconds < -1:
        return "<invalid>"
    if whole_seconds < 0:
        return "0s"
    if whole_seconds < 120:
        return f"{whole_seconds}s"
    minutes = ns // _NS_PER_MINUTE
    if minutes < 10:
        s = (ns // _NS_PER_SECOND) % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = ns // _NS_PER_HOUR
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if dy == 0 else f"{years}y{dy}d"
    return f"{hours // 24 // 365}y"


def format_rfc3339(ts: datetime) -> str:
    """metav1.Time's JSON form: UTC, whole seconds, "Z" (a naive datetime is taken to be UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    u = ts.astimezone(UTC)
    # Not strftime: glibc prints year 5 as "5", Go as "0005".
    return f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}Z"


_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?(?:(Z)|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def parse_rfc3339(text: str) -> datetime:
    """Go's time.Parse(time.RFC3339, ...): "T" and "Z" as written, optional fractional seconds,
    numeric offsets. Returns an aware datetime in UTC; ValueError for anything else."""
    m = _RFC3339_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac = m.group(7) or ""
    micro = int((frac + "000000")[:6])  # Go keeps nanoseconds; Python stops at microseconds
    if m.group(8):
        tz: timezone = UTC
    else:
        off_h, off_m = int(m.group(10)), int(m.group(11))
        if off_h > 23 or off_m > 59:
            raise ValueError(f"time zone offset out of range in {text!r}")
        offset = timedelta(hours=off_h, minutes=off_m)
        tz = timezone(-offset if m.group(9) == "-" else offset)
    try:
        parsed = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError as err:
        raise ValueError(f"not an RFC 3339 time: {text!r}: {err}") from None
    return parsed.astimezone(UTC)
