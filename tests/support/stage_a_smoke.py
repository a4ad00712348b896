"""Stage-A settings for the random-weight smoke VLM in tests.

The smoke model never stops on its own, so every answer runs to the cap: tests cap it low (speed) and
lift the blocking truncation threshold so downstream assets still run; the WARN level stays on.
A test that is about truncation sets its own thresholds.
"""

from pathlib import Path

import yaml

SMOKE_STAGE_A = {"max_new_tokens": 8, "max_truncated_share_blocking": 1.0}


def smoke_settings_file(directory: Path) -> str:
    """A QC_STAGE_A_CONFIG file with SMOKE_STAGE_A, for runs launched without a run config (CLI, sensor)."""
    path = Path(directory) / "stage_a_settings.yaml"
    path.write_text(yaml.safe_dump(SMOKE_STAGE_A), encoding="utf-8")
    return str(path)
