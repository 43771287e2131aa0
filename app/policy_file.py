"""Loading the policy file: YAML in, a validated Policy out, or one message naming the bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from detectors.policy import Policy


class PolicyError(ValueError):
    """The policy file is unreadable or invalid; str() is the message to show the user."""


def load_policy(path: str | Path | None) -> Policy:
    """The policy at `path`, or the shipped default policy when path is None."""
    if path is None:
        return Policy()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"policy file {path}: cannot read it ({exc.strerror or exc})") from exc
    return parse_policy(text, str(path))


def parse_policy(text: str, name: str = "policy") -> Policy:
    """Validate policy YAML text; errors name the key path, e.g. `agents.bot.velocity_caps.0.window`."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PolicyError(f"{name}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"{name}: the top level must be a mapping (agents:, humans:, defaults:, ...)")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(f"{name}: " + describe_errors(exc)) from exc


def describe_errors(exc: ValidationError) -> str:
    """One line per problem: the dotted key path and what is wrong with it."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-")) or "(top level)"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see README 'Policy file')"
        lines.append(f"{where}: {message}")
    return "; ".join(lines)
