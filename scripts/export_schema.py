"""Writes docs/change-event.schema.json, the JSON Schema of the canonical change event.

    python scripts/export_schema.py          (tests/unit/test_schema_export.py checks it is current)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detectors.events import ChangeEvent  # noqa: E402

TARGET = ROOT / "docs" / "change-event.schema.json"


def schema_text() -> str:
    schema = ChangeEvent.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://crm-guard.dev/schemas/change-event.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    TARGET.write_text(schema_text())
    print(f"wrote {TARGET.relative_to(ROOT)}")
