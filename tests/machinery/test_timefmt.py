"""HumanDuration (apimachinery's duration_test.go tables) and metav1.Time's RFC 3339 form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from aggapi.machinery.timefmt import format_rfc3339, human_duration, parse_rfc3339

S, M, H, D, Y = 1, 60, 3600, 86400, 365 * 86400
MS = 0.001
NS = 1e-9


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1 * S, "1s"),
        (70 * S, "70s"),
        (190 * S, "3m10s"),
        (70 * M, "70m"),
        (47 * H, "47h"),
        (49 * H, "2d1h"),
        ((8 * 24 + 2) * H, "8d"),
        (367 * 24 * H, "367d"),
        ((365 * 2 * 24 + 25) * H, "2y1d"),
        ((365 * 8 * 24 + 2) * H, "8y"),
        (400 * D, "400d"),
        (3 * Y + 120 * D, "3y120d"),
        (200 * S, "3m20s"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-2 * S, "<invalid>"),
        (-2 * S + NS, "0s"),
        (-1 * S, "0s"),
        (0, "0s"),
        (1 * S - MS, "0s"),
        (2 * M - MS, "119s"),
        (2 * M, "2m"),
        (2 * M + S, "2m1s"),
        (10 * M - MS, "9m59s"),
        (10 * M, "10m"),
        (10 * M + S, "10m"),
        (3 * H - MS, "179m"),
        (3 * H, "3h"),
        (3 * H + M, "3h1m"),
        (8 * H - MS, "7h59m"),
        (8 * H, "8h"),
        (8 * H + 59 * M, "8h"),
        (2 * D - MS, "47h"),
        (2 * D, "2d"),
        (2 * D + H, "2d1h"),
        (8 * D - MS, "7d23h"),
        (8 * D, "8d"),
        (8 * D + 23 * H, "8d"),
        (2 * Y - MS, "729d"),
        (2 * Y, "2y"),
        (2 * Y + 23 * H, "2y"),
        (2 * Y + 23 * H + 59 * M, "2y"),
        (2 * Y + D - MS, "2y"),
        (2 * Y + D, "2y1d"),
        (3 * Y, "3y"),
        (7 * Y, "7y"),
        (8 * Y - MS, "7y364d"),
        (8 * Y, "8y"),
        (8 * Y + 364 * D, "8y"),
        (9 * Y, "9y"),
        (-3600, "<invalid>"),
    ],
)
def test_human_duration_boundaries(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (datetime(2026, 11, 28, 1, 2, 3, tzinfo=UTC), "2026-11-28T01:02:03Z"),
        (datetime(2026, 11, 28, 1, 2, 3, 999999, tzinfo=UTC), "2026-11-28T01:02:03Z"),
        (datetime(2026, 11, 28, 1, 2, 3), "2026-11-28T01:02:03Z"),  # naive means UTC
        (datetime(2026, 11, 28, 3, 2, 3, tzinfo=timezone(timedelta(hours=2))), "2026-11-28T01:02:03Z"),
        (datetime(2027, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=-1))), "2027-01-01T01:30:00Z"),
        (datetime(5, 1, 2, 3, 4, 5, tzinfo=UTC), "0005-01-02T03:04:05Z"),
    ],
)
def test_format_rfc3339(ts: datetime, text: str) -> None:
    assert format_rfc3339(ts) == text


@pytest.mark.parametrize(
    ("text", "ts"),
    [
        ("2026-11-28T01:02:03Z", datetime(2026, 11, 28, 1, 2, 3, tzinfo=UTC)),
        ("2026-11-28T01:02:03.5Z", datetime(2026, 11, 28, 1, 2, 3, 500000, tzinfo=UTC)),
        ("2026-11-28T01:02:03.123456789Z", datetime(2026, 11, 28, 1, 2, 3, 123456, tzinfo=UTC)),
        ("2026-11-28T03:02:03+02:00", datetime(2026, 11, 28, 1, 2, 3, tzinfo=UTC)),
        ("2026-11-27T23:02:03-02:00", datetime(2026, 11, 28, 1, 2, 3, tzinfo=UTC)),
        ("2026-11-28T01:02:03+00:00", datetime(2026, 11, 28, 1, 2, 3, tzinfo=UTC)),
        ("2024-02-29T00:00:00Z", datetime(2024, 2, 29, tzinfo=UTC)),
    ],
)
def test_parse_rfc3339(text: str, ts: datetime) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == ts and parsed.utcoffset() == timedelta(0)


def test_round_trip() -> None:
    assert format_rfc3339(parse_rfc3339("2026-11-28T03:02:03.75+02:00")) == "2026-11-28T01:02:03Z"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-11-28",
        "2026-11-28T01:02:03",  # no zone
        "2026-11-28 01:02:03Z",
        "2026-11-28t01:02:03Z",
        "2026-11-28T01:02:03z",
        "2026-11-28T01:02Z",
        "20261128T010203Z",
        "2026-11-28T01:02:03+0200",
        "2026-11-28T01:02:03+24:00",
        "2026-13-28T01:02:03Z",
        "2023-02-29T00:00:00Z",
        "2026-11-28T25:02:03Z",
        "2026-11-28T01:02:03.Z",
        "2026-11-28T01:02:03Z\n",
        "\uff12\uff10\uff12\uff16-11-28T01:02:03Z",  # fullwidth digits
    ],
)
def test_parse_rfc3339_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)
