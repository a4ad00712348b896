"""`inbox_summaries`: the Stage-A summaries of the groups waiting in a mission's inbox, the first step of
the production path (inbox -> qc_verdicts). The same sharded asset as Stage-A (qc_assets/stage_a/shard_ops.py)
with the same settings, so its summaries read like the ones the guidance was learned on."""

import json

import dagster as dg

from qc_assets.asset_names import INBOX_SUMMARIES, QC_VERDICTS
from qc_assets.run_config import dagster_config
from qc_assets.stage_a.assets import stage_a_report
from qc_assets.stage_a.discovery import INBOX_FOLDER
from qc_assets.stage_a.runner import StageAConfig
from qc_assets.stage_a.shard_ops import sharded_stage_a_asset
from resources.storage import StorageResource
from resources.store import read_jsonl

# The inbox uses the same settings (same defaults) as Stage-A; it is never capped: every submission gets a
# verdict.
InboxSummariesConfig = dagster_config(StageAConfig, "InboxSummariesConfig")


def _never_capped(config: StageAConfig) -> None:
    if config.pass_cap is not None or config.fail_cap is not None:
        raise ValueError(
            f"{INBOX_SUMMARIES} is never capped (every submission gets a verdict): leave pass_cap and "
            f"fail_cap unset, got {config.pass_cap} / {config.fail_cap}"
        )


inbox_summaries = sharded_stage_a_asset(
    INBOX_SUMMARIES,
    True,
    InboxSummariesConfig,
    f"Stage-A summaries of the unlabelled groups under <mission>/{INBOX_FOLDER}/ (label null); read only by "
    f"{QC_VERDICTS}, never by a training asset.",
    _never_capped,
    stage_a_report("inbox"),
)


def load_inbox_records(storage: StorageResource, mission: str) -> list[dict]:
    """The inbox records (label null); an empty list when the inbox is empty, an error when never summarised."""
    path = storage.root() / INBOX_SUMMARIES / mission / "records.jsonl"
    if not path.exists():
        raise dg.Failure(
            f"no inbox summaries for mission {mission!r} at {path}: materialize {INBOX_SUMMARIES} first",
            metadata={"expected_path": dg.MetadataValue.path(str(path))},
        )
    return read_jsonl(path)


def inbox_group_id_pattern(storage: StorageResource, mission: str) -> str | None:
    """The group_id_pattern the inbox summaries were made with (so verdicts name groups as Stage-A did),
    or None when the inbox was never summarised by this version (no run.json)."""
    path = storage.root() / INBOX_SUMMARIES / mission / "run.json"
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))["config"]["group_id_pattern"]


assets = [inbox_summaries]
