"""argparse value types shared by the CLI modules: a bad number is a usage error (exit 2) that
names the option, never a traceback or a command that hangs (`demo --speed 0` waited forever)."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    """A whole number above 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0."""
    return _finite(text, zero_allowed=False)


def non_negative_float(text: str) -> float:
    """A finite number of 0 or more."""
    return _finite(text, zero_allowed=True)


def port_number(text: str) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {value}")
    return value


def _finite(text: str, *, zero_allowed: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    if value < 0 or (value == 0 and not zero_allowed):
        raise argparse.ArgumentTypeError(f"must be {'0 or more' if zero_allowed else 'above 0'}, not {text}")
    return value
