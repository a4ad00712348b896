"""Quality gates on `stage_b_guidance`: the kept guidance's schema, not worse than the baseline on test
(blocking), convergence; expected vs actual in metadata."""

import json

import dagster as dg

from qc_assets.asset_names import STAGE_B_GUIDANCE
from qc_assets.missions import get_mission
from qc_assets.stage_b.assets import stage_b_guidance
from qc_assets.stage_b.guidance import Guidance, GuidanceStore
from resources.storage import StorageResource


def _result(storage: StorageResource, mission: str) -> dict | None:
    path = storage.root() / STAGE_B_GUIDANCE / mission / "result.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


@dg.asset_check(asset=stage_b_guidance, description="The kept guidance snapshot satisfies the guidance schema.")
def stage_b_guidance_schema(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    store = GuidanceStore(storage.root() / STAGE_B_GUIDANCE / context.partition_key / "guidance")
    version = store.pointer("best")
    if version is None:
        return dg.AssetCheckResult(passed=False, metadata={"expected": "guidance/best.json", "actual": "missing"})
    try:
        guidance = Guidance.from_dict(store.snapshot(version)["guidance"])
    except (ValueError, KeyError, TypeError) as e:
        return dg.AssetCheckResult(passed=False, metadata={"version": version, "error": str(e)[:1000]})
    mission = get_mission(context.partition_key)
    scaffold = [it.text for it in guidance.items if it.id.startswith("S")]
    problems = []
    if guidance.get("G0").text != mission.focus:
        problems.append("G0 differs from the mission focus")
    if tuple(scaffold) != tuple(mission.scaffold_rules):
        problems.append("scaffold rules were changed")
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "version": version,
            "expected": "G0 = mission focus, S* = scaffold rules, ids unique and numeric",
            "actual": "; ".join(problems) or "ok",
            "rules": len(guidance.items),
        },
    )


def not_worse_than_baseline(result: dict) -> tuple[bool, dict]:
    """(passed, metadata) for the blocking check, from result.json. Fails when the kept version is worse
    than the baseline on test beyond the paired bootstrap interval (the whole interval below zero)."""
    test = result["test"]
    meta = {
        "kept_version": result["kept_version"],
        "baseline_version": result["baseline_version"],
        "test_groups": test["n_groups"],
        "expected": "upper end of the interval of kept - baseline >= 0",
    }
    if not test["conclusive"]:
        return True, {**meta, "actual": "inconclusive", "note": test["note"]}
    meta.update(
        baseline_test_accuracy=test["baseline_accuracy"],
        kept_test_accuracy=test["kept_accuracy"],
        difference=test["difference"],
        ci_low=test["ci_low"],
        ci_high=test["ci_high"],
        level=test["level"],
    )
    return test["ci_high"] >= 0, {**meta, "actual": test["verdict"]}


@dg.asset_check(
    asset=stage_b_guidance,
    blocking=True,
    description="On test (read once), the kept version is not worse than the initial guidance "
    "beyond the paired bootstrap interval; a test side too small to conclude says so.",
)
def stage_b_not_worse_than_baseline(
    context: dg.AssetCheckExecutionContext, storage: StorageResource
) -> dg.AssetCheckResult:
    result = _result(storage, context.partition_key)
    if result is None:
        return dg.AssetCheckResult(passed=False, metadata={"expected": "result.json", "actual": "missing"})
    passed, meta = not_worse_than_baseline(result)
    return dg.AssetCheckResult(passed=passed, metadata=meta)


STOP_CAUSES = {
    "converged": "an epoch evaluated valid candidates and accepted none",
    "max_epochs": "stopped at max epochs while still accepting edits: raise epochs to let it converge",
    "no_usable_candidate": "the reflector produced no usable candidate (invalid JSON, or every candidate "
    "filtered): see rule_candidates.jsonl",
    "nothing_to_reflect": "no wrong or mixed train group left to reflect on; nothing was gated",
}


@dg.asset_check(
    asset=stage_b_guidance,
    description="The loop converged: an epoch accepted no edit after "
    "valid candidates were evaluated (otherwise WARN with the cause).",
)
def stage_b_converged(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    result = _result(storage, context.partition_key)
    if result is None:
        return dg.AssetCheckResult(
            passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"expected": "result.json", "actual": "missing"}
        )
    reason = result["stop_reason"]
    return dg.AssetCheckResult(
        passed=reason == "converged",
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "expected": "converged",
            "actual": reason,
            "cause": STOP_CAUSES[reason],
            "epochs_run": result["epochs_run"],
            "gated_candidates": result["gated_candidates"],
            "accepted_edits": result["accepted_edits"],
        },
    )


asset_checks = [stage_b_guidance_schema, stage_b_not_worse_than_baseline, stage_b_converged]
