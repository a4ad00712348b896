"""Load each fusion source into uniform chatml examples.

An example is `{"source", "messages", "images", "group_id", "mission"}`. Text-only rows (distill,
external chat) have `images == []`; Stage-A summary rows are one per photo:
[system = Stage-A system prompt, user = [image, Stage-A user prompt], assistant = the summary] with
the photo's absolute path in `images`. Groups held out for this mission's evaluation are dropped
from that mission's sources, so the gate never scores the checkpoint on what it trained on.
`discover_missions` lists the missions with data on disk: the one student trains on all of them.

Weights are honoured by repetition, not by a loss weight: a row with `weight: w` (and, if it is
marked `hard_case`, times its source's `hard_case_factor`) stands w times in its source's pool, so
its share of the source's quota is w times a plain row's; the loss stays a plain mean over
completion tokens. A `copy > 0` row of an older distill export (which wrote its weight out as
copies) is skipped: its `copy: 0` row already carries the weight.

A chatml file's rows may carry images (dense captions, Stage-A summaries from another project):
`images` lists paths relative to the file, one per `{"type": "image"}` part of the user turns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from qc_assets.missions import get_mission
from qc_assets.stage_a import prompts as stage_a_prompts
from qc_assets.student.config import SourceConfig
from resources.store import read_jsonl

DISTILL_ASSET = "distill_chatml"
DISTILL_FILE = "distill_chatml.jsonl"
STAGE_A_ASSET = "stage_a_summaries"
_ROLES = ("system", "user", "assistant")


@dataclass
class LoadedSource:
    config: SourceConfig
    examples: list[dict]
    note: str = ""  # why a source is empty or smaller than its file
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows


def validate_chatml(messages, where: str) -> list[dict]:
    """ValueError unless messages are [.., user, assistant] with known roles and a non-empty reply."""
    if not isinstance(messages, list) or len(messages) < 2:
        raise ValueError(f"{where}: messages must be a list of at least [user, assistant], got {messages!r:.200}")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in _ROLES:
            raise ValueError(f"{where}: message {i} must have role in {_ROLES}, got {msg!r:.200}")
    if messages[-1]["role"] != "assistant":
        raise ValueError(f"{where}: last message must be the assistant reply, got role {messages[-1]['role']!r}")
    reply = messages[-1].get("content")
    if not isinstance(reply, str) or not reply.strip():
        raise ValueError(f"{where}: assistant reply must be a non-empty string, got {reply!r:.200}")
    return messages


def _count(dropped: dict[str, int], reason: str) -> None:
    dropped[reason] = dropped.get(reason, 0) + 1


def row_repeats(row: dict, hard_case_factor: int, where: str) -> int:
    """How many times a row stands in its pool: its `weight` (default 1) x the source's
    `hard_case_factor` when it is marked `hard_case`."""
    weight = row.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
        raise ValueError(f"{where}: weight must be an integer >= 1, got {weight!r}")
    return weight * (hard_case_factor if row.get("hard_case") else 1)


def _row_images(row: dict, messages: list[dict], base_dir: Path | None, where: str) -> list[str] | None:
    """Absolute image paths of a row (None = a listed image is missing on disk)."""
    images = row.get("images") or []
    parts = sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for c in m["content"]
        if isinstance(c, dict) and c.get("type") == "image"
    )
    if len(images) != parts:
        raise ValueError(f"{where}: {len(images)} images for {parts} image parts in the messages")
    if images and base_dir is None:
        raise ValueError(f"{where}: only a chatml_file source's rows may carry images")
    paths = [Path(p) if Path(p).is_absolute() else base_dir / p for p in images]
    return None if any(not p.is_file() for p in paths) else [str(p) for p in paths]


def _chatml_examples(
    rows: Iterable[dict],
    source: str,
    where: str,
    exclude_groups: set[str],
    mission: str | None,
    hard_case_factor: int = 1,
    base_dir: Path | None = None,
) -> tuple[list[dict], dict[str, int]]:
    out, dropped = [], {}
    for i, row in enumerate(rows):
        gid = row.get("group_id")
        row_mission = row.get("mission", mission)
        if gid is not None and row_mission == mission and gid in exclude_groups:
            _count(dropped, "held_out_group")
            continue
        if row.get("copy", 0) > 0:
            _count(dropped, "weighted_copy")
            continue
        messages = validate_chatml(row.get("messages"), f"{where} row {i}")
        images = _row_images(row, messages, base_dir, f"{where} row {i}")
        if images is None:
            _count(dropped, "missing_image")
            continue
        example = {"source": source, "messages": messages, "images": images, "group_id": gid, "mission": row_mission}
        out.extend(dict(example) for _ in range(row_repeats(row, hard_case_factor, f"{where} row {i}")))
    return out, dropped


def stage_a_examples(
    records: list[dict],
    mission_name: str,
    images_root: Path,
    source: str = "stage_a_summary",
    exclude_groups: frozenset[str] | set[str] = frozenset(),
) -> tuple[list[dict], dict[str, int]]:
    """One SFT row per summarised photo, under the prompt that produced it; photos that no longer exist
    are dropped and counted. Summaries cut at max_new_tokens are kept (the smoke model cuts every one);
    stage_a_truncation_share blocks a partition where too many are cut."""
    mission = get_mission(mission_name)
    out, dropped = [], {}
    for rec in records:
        if rec["group_id"] in exclude_groups:
            dropped["held_out_group"] = dropped.get("held_out_group", 0) + 1
            continue
        # records written before prompt profiles existed were made with the default profile and pack
        prompt = stage_a_prompts.build_prompt(
            mission, rec.get("dataset"), rec.get("prompt_profile", stage_a_prompts.DEFAULT_PROFILE)
        )
        system, user = prompt.system, prompt.user
        for n, rel in enumerate(rec["images"], start=1):
            summary = rec["per_image"].get(f"image_{n}", "")
            path = Path(images_root) / mission_name / rel
            if not summary.strip():
                dropped["empty_summary"] = dropped.get("empty_summary", 0) + 1
                continue
            if not path.is_file():
                dropped["missing_image"] = dropped.get("missing_image", 0) + 1
                continue
            out.append(
                {
                    "source": source,
                    "images": [str(path)],
                    "group_id": rec["group_id"],
                    "mission": mission_name,
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user}]},
                        {"role": "assistant", "content": summary.strip()},
                    ],
                }
            )
    return out, dropped


def distill_path(data_root: Path, mission: str) -> Path:
    return Path(data_root) / DISTILL_ASSET / mission / DISTILL_FILE


def load_source(
    src: SourceConfig, *, mission: str, data_root: Path, images_root: Path, exclude_groups: set[str]
) -> LoadedSource:
    data_root = Path(data_root)
    if src.type == "distill_chatml":
        path = distill_path(data_root, mission)
        if not path.exists():
            return LoadedSource(src, [], note=f"{path} missing: materialize distill_chatml for {mission!r}")
        examples, dropped = _chatml_examples(
            read_jsonl(path), src.name, str(path), exclude_groups, mission, src.hard_case_factor
        )
        return LoadedSource(src, examples, note="" if examples else f"{path} has no usable rows", dropped=dropped)
    if src.type == "stage_a_summaries":
        path = data_root / STAGE_A_ASSET / mission / "records.jsonl"
        if not path.exists():
            return LoadedSource(src, [], note=f"{path} missing: materialize stage_a_summaries for {mission!r}")
        examples, dropped = stage_a_examples(read_jsonl(path), mission, images_root, src.name, exclude_groups)
        return LoadedSource(src, examples, note="" if examples else "no usable Stage-A summaries", dropped=dropped)
    # chatml_file: the config already checked the file exists.
    examples, dropped = _chatml_examples(
        read_jsonl(Path(src.path)),
        src.name,
        src.path,
        set(),
        None,
        src.hard_case_factor,
        base_dir=Path(src.path).parent,
    )
    return LoadedSource(src, examples, note="" if examples else f"{src.path} has no rows", dropped=dropped)


def discover_missions(data_root: Path) -> list[str]:
    """Missions with Stage-A records or distill rows on disk, sorted."""
    data_root = Path(data_root)
    found = {p.parent.name for p in (data_root / STAGE_A_ASSET).glob("*/records.jsonl")}
    found |= {p.parent.name for p in (data_root / DISTILL_ASSET).glob(f"*/{DISTILL_FILE}")}
    return sorted(found)
