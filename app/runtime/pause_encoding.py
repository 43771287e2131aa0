"""TEMPORARY: replaced by the signed pause publisher (app/pause) before commit."""
from __future__ import annotations
import orjson
from app.config import Settings
from detectors.alerts import PauseDecision

def pause_encoder_for(settings: Settings):
    def encode(p: PauseDecision) -> tuple[str, bytes, bytes]:
        return settings.topics.pause, p.agent.encode(), orjson.dumps(p.model_dump(mode="json"))
    return encode
