"""Every detector the guard runs, in the order it runs them. Add a new detector here."""

from __future__ import annotations

from typing import Any

from detectors.policy import Policy
from detectors.protected_field import ProtectedFieldDetector
from detectors.source_gap import SourceGapDetector
from detectors.unattributed_actor import UnattributedActorDetector
from detectors.velocity_cap import VelocityCapDetector


def default_detectors(policy: Policy) -> list[Any]:
    """Fresh detector objects for a policy (some keep per-agent models, so never share them)."""
    return [
        UnattributedActorDetector(),
        SourceGapDetector(),
        VelocityCapDetector(),
        ProtectedFieldDetector(),
    ]
