"""Scenario generator: realistic CRM traffic in HubSpot, Salesforce and Pipedrive formats, with
injected faults and ground truth (see generator.py for the world, vendors.py for the formats,
truth.py for truth.json, policy.py for the generated policy file).

    from app.scenario import ScenarioConfig, generate
    generate(ScenarioConfig.preset("standard", seed=7), "out/")
"""

from app.scenario.generator import ScenarioConfig, ScenarioResult, generate
from app.scenario.truth import EXPECTED_DETECTORS, FAULT_CLASSES, LOOKALIKE_CLASSES, load_truth

__all__ = [
    "EXPECTED_DETECTORS",
    "FAULT_CLASSES",
    "LOOKALIKE_CLASSES",
    "ScenarioConfig",
    "ScenarioResult",
    "generate",
    "load_truth",
]
