"""Every detector the guard runs, in the order it runs them. Add a new detector here."""

from __future__ import annotations

from typing import Any

from detectors.activity_anomaly import ActivityAnomalyDetector
from detectors.duplicate_spike import DuplicateIndexDetector, DuplicateSpikeDetector
from detectors.gate import AutonomyBreachDetector
from detectors.mass_overwrite import MassOverwriteDetector
from detectors.override import OverrideDetector
from detectors.override_rate import OverrideRateDetector
from detectors.policy import Policy
from detectors.protected_field import ProtectedFieldDetector
from detectors.source_gap import SourceGapDetector
from detectors.stage_anomaly import StageAnomalyDetector, StageEscalationDetector, SupportContextDetector
from detectors.trust import TrustState
from detectors.unattributed_actor import UnattributedActorDetector
from detectors.velocity_cap import VelocityCapDetector


def default_detectors(policy: Policy, trust_state: TrustState | None = None) -> list[Any]:
    """Fresh detector objects for a policy (some keep per-agent models, so never share them).

    `trust_state` is the review service's trust mapping when one runs in this process; without
    it autonomy_breach judges direct writes by the policy's autonomy levels alone.
    """
    return [
        # record stage
        OverrideDetector(),
        StageAnomalyDetector(),
        # link stage
        DuplicateIndexDetector(),
        SupportContextDetector(),
        # actor stage
        UnattributedActorDetector(),
        SourceGapDetector(),
        VelocityCapDetector(),
        ProtectedFieldDetector(),
        AutonomyBreachDetector(trust_state if trust_state is not None else {}),
        MassOverwriteDetector(),
        DuplicateSpikeDetector(),
        StageEscalationDetector(),
        OverrideRateDetector(),
        ActivityAnomalyDetector(),
    ]
