"""Command-line value types shared by the edge commands."""

from __future__ import annotations

import argparse


def duration(text: str) -> float:
    """Seconds from a Go-style duration ("10s", "500ms", "1m") or a bare number of seconds."""
    units = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
    try:
        for suffix, scale in units:
            if text.endswith(suffix):
                value = float(text[: -len(suffix)]) * scale
                break
        else:
            value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 10s, 500ms)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"duration {text!r} must be positive")
    return value
