"""Sensor tick cost at 10^5 and 10^6 photos: nothing new, then one new group.

    python -m benchmarks.sensor_tick                        # 10^5 and 10^6 photos, writes docs/benchmarks.md
    python -m benchmarks.sensor_tick --photos 100000 --no-doc

Builds empty photo files (os.open/close, no image data: the sensor never reads a photo) in the
production layout under a temp dir, spread over the seven registered missions, each with the two
label folders and an inbox, `--per-group` photos per group. Times the real sensor evaluation
(`new_images_sensor` on a `dg.instance_for_test()` instance, cursor from the previous tick) and,
at the smallest size, the earlier implementation that hashed every file's path, size and mtime.
Writes the section "## Sensor tick" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import dagster as dg

from qc_assets.missions import MISSIONS
from qc_assets.sensors import new_images_sensor
from qc_assets.stage_a.discovery import INBOX_FOLDER
from qc_assets.stage_a.jobs import stage_a_job
from qc_assets.stage_a.watch import scan, sweep_budget_from_env
from resources.storage import StorageResource

FOLDERS = ("审核通过", "审核不通过", INBOX_FOLDER)


def build_tree(root: Path, photos: int, per_group: int) -> int:
    """`photos` empty files in groups of `per_group`, round-robin over missions and folders; returns groups."""
    missions = sorted(MISSIONS)
    groups = photos // per_group
    for g in range(groups):
        mission, folder = missions[g % len(missions)], FOLDERS[(g // len(missions)) % len(FOLDERS)]
        group_dir = root / mission / folder / f"G{g:07d}"
        os.makedirs(group_dir)
        for i in range(1, per_group + 1):
            os.close(os.open(group_dir / f"{i}.jpg", os.O_CREAT | os.O_WRONLY, 0o644))
    return groups


def per_file_hash(images_root: Path) -> dict[str, str]:
    """The earlier `mission_signatures`: every file's path, size and mtime, hashed (the baseline)."""
    signatures = {}
    for mission_dir in sorted(p for p in images_root.iterdir() if p.is_dir()):
        digest = hashlib.sha256()
        for path in sorted(mission_dir.rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(
                    f"{path.relative_to(mission_dir).as_posix()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode()
                )
        signatures[mission_dir.name] = digest.hexdigest()[:16]
    return signatures


def _tick(instance, storage, cursor):
    started = time.perf_counter()
    result = new_images_sensor(
        dg.build_sensor_context(instance=instance, cursor=cursor, resources={"storage": storage})
    )
    return result, time.perf_counter() - started


def measure(photos: int, per_group: int, repeats: int, baseline: bool, workdir: str | None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="sensor_tick_", dir=workdir))
    try:
        started = time.perf_counter()
        groups = build_tree(tmp / "images", photos, per_group)
        build_s = time.perf_counter() - started
        storage = StorageResource(data_root=str(tmp / "data"), images_root=str(tmp / "images"))
        with dg.instance_for_test() as instance:
            first, first_s = _tick(instance, storage, None)
            instance.add_dynamic_partitions("missions", first.dynamic_partitions_requests[0].partition_keys)
            idle = []
            for _ in range(repeats):
                result, seconds = _tick(instance, storage, first.cursor)
                assert result.run_requests == []
                idle.append(seconds)
            cursor = json.loads(first.cursor)
            _, _, swept_groups = scan(tmp / "images", cursor["missions"], cursor["sweep"], sweep_budget_from_env())
            mission = sorted(MISSIONS)[0]
            group_dir = tmp / "images" / mission / "审核通过" / "NEW0001"
            os.makedirs(group_dir)
            os.close(os.open(group_dir / "1.jpg", os.O_CREAT | os.O_WRONLY, 0o644))
            changed, changed_s = _tick(instance, storage, first.cursor)
            requested = sorted((r.partition_key, r.job_name) for r in changed.run_requests)
            assert requested == [(mission, stage_a_job.name)], requested
        out = {
            "photos": photos,
            "groups": groups,
            "per_group": per_group,
            "build_s": round(build_s, 1),
            "first_tick_s": round(first_s, 3),
            "idle_tick_median_s": round(statistics.median(idle), 3),
            "idle_tick_max_s": round(max(idle), 3),
            "new_group_tick_s": round(changed_s, 3),
            "requested": [list(r) for r in requested],
            "cursor_bytes": len(first.cursor.encode()),
            "idle_group_stats": swept_groups,
            "sweep_budget": sweep_budget_from_env(),
            "ticks_per_full_sweep": -(-groups // sweep_budget_from_env()),
            "load_average_1min": round(os.getloadavg()[0], 1),
        }
        if baseline:
            started = time.perf_counter()
            per_file_hash(tmp / "images")
            out["per_file_hash_s"] = round(time.perf_counter() - started, 3)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def section(results: list[dict], cmd: str) -> str:
    lines = [
        "## Sensor tick",
        "",
        f"Command: `{cmd}`",
        "",
        "One evaluation of `new_images_sensor` (the real sensor on a `dg.instance_for_test()` instance; "
        "empty photo files in the production layout over the 7 registered missions, 2 label folders + "
        "the inbox each; warm directory cache, as for a sensor that ticks every 60 s). Shared 2-core CPU, "
        "other jobs running: 1-minute load average "
        f"{', '.join(str(r['load_average_1min']) for r in results)} at the end of each size.",
        "",
        "| photos | groups | first tick s | idle tick s (median / max) | group folders stat-ed per idle tick "
        "| tick after 1 new group s | runs requested | cursor bytes | ticks per full sweep | "
        "earlier per-file hash s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['photos']:,} | {r['groups']:,} | {r['first_tick_s']} | {r['idle_tick_median_s']} / "
            f"{r['idle_tick_max_s']} | {r['idle_group_stats']:,} | {r['new_group_tick_s']} | "
            f"{', '.join(f'{m}:{j}' for m, j in r['requested'])} | {r['cursor_bytes']} | {r['ticks_per_full_sweep']} | "
            f"{r.get('per_file_hash_s', 'not run')} |"
        )
    lines += [
        "",
        "A tick reads no photo. It stats the mission and label folders, rescans the group folders of a "
        "folder whose mtime moved (a new group: cost proportional to that folder), and re-stats about "
        "`QC_SENSOR_SWEEP_GROUPS` (default 20,000) further group folders in rotation, which finds a photo "
        "added inside an existing group within one full sweep. The idle tick therefore stays flat as the "
        "photo count grows, and the cursor stays the same size. After one new group only that mission's "
        "Stage-A run is requested. The first tick scans every group folder once.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--per-group", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", default=None, help="where the temp tree goes (default: the system temp dir)")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    results = []
    for i, photos in enumerate(args.photos):
        results.append(measure(photos, args.per_group, args.repeats, baseline=i == 0, workdir=args.workdir))
        print(json.dumps(results[-1], ensure_ascii=False))
    if not args.no_doc:
        from benchmarks.report import DOC, write_section

        cmd = (
            f"python -m benchmarks.sensor_tick --photos {' '.join(map(str, args.photos))} "
            f"--per-group {args.per_group} --repeats {args.repeats}"
        )
        write_section(DOC, section(results, cmd))


if __name__ == "__main__":
    main()
