"""Itemised guidance with stable rule ids, and a versioned on-disk store.

Ids: `G0` is the mission focus (never removed), `S1..Sk` are scaffold rules (immutable), `G1..Gn`
are learned. Learned ids are never reused, so a removed `G3` stays gone from later versions' history.
Ids sort numerically (`G2` before `G10`); the earlier system sorted them as strings.

Every accepted change is a new version `guidance/v0003.json`; `current.json` and `best.json` point
at versions. Committing the same change to the same parent again returns the existing version, so a
replayed run (resume after a crash) does not fork the history.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from qc_assets.markdown import md_table
from resources.store import atomic_write_json

_ID = re.compile(r"^(G|S)(\d+)$")
OPS = ("add", "update", "remove", "merge")


def rule_sort_key(rule_id: str) -> tuple[int, int]:
    """G0 first, then scaffold S1.., then learned G1..; numbers compared as numbers."""
    m = _ID.match(rule_id)
    if not m:
        raise ValueError(f"rule id must look like G<n> or S<n>, got {rule_id!r}")
    prefix, num = m.group(1), int(m.group(2))
    if prefix == "G" and num == 0:
        return (0, 0)
    return (1, num) if prefix == "S" else (2, num)


def sort_rule_ids(ids) -> list[str]:
    return sorted(ids, key=rule_sort_key)


def is_learned(rule_id: str) -> bool:
    return rule_sort_key(rule_id)[0] == 2


@dataclass(frozen=True)
class RuleOp:
    """One proposed edit. `ids` names existing learned rules (update/remove: one; merge: two or more)."""

    op: str
    text: str | None = None
    ids: tuple[str, ...] = ()
    rationale: str | None = None

    def signature(self) -> str:
        """What makes two proposals 'the same edit' for the rejected-edit memory."""
        text = re.sub(r"\s+", "", self.text or "").rstrip("。.")
        return json.dumps([self.op, sorted(self.ids), text], ensure_ascii=False)

    def to_dict(self) -> dict:
        return {"op": self.op, "text": self.text, "ids": list(self.ids), "rationale": self.rationale}


@dataclass(frozen=True)
class GuidanceItem:
    id: str
    text: str
    groups: tuple[str, ...] = ()  # provenance: groups whose errors motivated the rule
    epoch: int | None = None  # provenance: epoch the rule was accepted in
    hits: int = 0  # groups the rule fixed when it was gated
    misses: int = 0  # groups the rule broke when it was gated


@dataclass(frozen=True)
class Guidance:
    mission: str
    items: tuple[GuidanceItem, ...]
    next_learned: int = 1
    version: int = 0

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.items, key=lambda it: rule_sort_key(it.id)))
        object.__setattr__(self, "items", ordered)
        problems = self.problems()
        if problems:
            raise ValueError(f"invalid guidance for {self.mission!r}: {'; '.join(problems)}")

    @classmethod
    def initial(cls, mission) -> Guidance:
        items = [GuidanceItem("G0", mission.focus)]
        items += [GuidanceItem(f"S{i}", text) for i, text in enumerate(mission.scaffold_rules, start=1)]
        return cls(mission=mission.name, items=tuple(items))

    def problems(self) -> list[str]:
        out = []
        ids = [it.id for it in self.items]
        if len(set(ids)) != len(ids):
            out.append(f"duplicate rule ids in {ids}")
        if "G0" not in ids:
            out.append("rule G0 (mission focus) is missing")
        for it in self.items:
            if not it.text or not it.text.strip():
                out.append(f"rule {it.id} has empty text")
            if is_learned(it.id) and int(it.id[1:]) >= self.next_learned:
                out.append(f"learned rule {it.id} is not below next_learned={self.next_learned}")
        return out

    @property
    def learned(self) -> tuple[GuidanceItem, ...]:
        return tuple(it for it in self.items if is_learned(it.id))

    def get(self, rule_id: str) -> GuidanceItem:
        for it in self.items:
            if it.id == rule_id:
                return it
        raise ValueError(f"rule {rule_id!r} not in guidance; ids: {[it.id for it in self.items]}")

    def content_hash(self) -> str:
        """Hash of what the model sees (ids and texts), not of counts or provenance."""
        payload = json.dumps([self.mission, [[it.id, it.text] for it in self.items]], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    def apply(self, op: RuleOp, *, epoch: int, groups=(), hits: int = 0, misses: int = 0) -> Guidance:
        """A new Guidance with `op` applied; ValueError if the op is not allowed on this guidance."""
        if op.op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {op.op!r}")
        for rule_id in op.ids:
            if not is_learned(rule_id):
                raise ValueError(f"{op.op} may only touch learned rules G1..Gn, got {rule_id!r}")
            self.get(rule_id)
        text = (op.text or "").strip()
        groups = tuple(sorted(set(groups)))
        items = list(self.items)
        nxt = self.next_learned
        if op.op in ("add", "update", "merge") and not text:
            raise ValueError(f"{op.op} needs a non-empty text")
        if op.op == "add":
            if op.ids:
                raise ValueError(f"add takes no ids, got {op.ids}")
            items.append(GuidanceItem(f"G{nxt}", text, groups, epoch, hits, misses))
            nxt += 1
        elif op.op in ("update", "remove"):
            if len(op.ids) != 1:
                raise ValueError(f"{op.op} takes exactly one id, got {op.ids}")
            old = self.get(op.ids[0])
            items.remove(old)
            if op.op == "update":
                merged = tuple(sorted(set(old.groups) | set(groups)))
                items.append(
                    replace(
                        old, text=text, groups=merged, epoch=epoch, hits=old.hits + hits, misses=old.misses + misses
                    )
                )
        else:
            if len(set(op.ids)) < 2:
                raise ValueError(f"merge takes two or more distinct ids, got {op.ids}")
            olds = [self.get(i) for i in op.ids]
            for old in olds:
                items.remove(old)
            union = set(groups).union(*(o.groups for o in olds))
            items.append(
                GuidanceItem(
                    f"G{nxt}",
                    text,
                    tuple(sorted(union)),
                    epoch,
                    hits + sum(o.hits for o in olds),
                    misses + sum(o.misses for o in olds),
                )
            )
            nxt += 1
        return Guidance(mission=self.mission, items=tuple(items), next_learned=nxt, version=self.version)

    def to_dict(self) -> dict:
        return {
            "mission": self.mission,
            "version": self.version,
            "next_learned": self.next_learned,
            "items": [{**asdict(it), "groups": list(it.groups)} for it in self.items],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Guidance:
        items = tuple(
            GuidanceItem(
                id=d["id"],
                text=d["text"],
                groups=tuple(d.get("groups", ())),
                epoch=d.get("epoch"),
                hits=int(d.get("hits", 0)),
                misses=int(d.get("misses", 0)),
            )
            for d in data["items"]
        )
        return cls(
            mission=data["mission"],
            items=items,
            next_learned=int(data["next_learned"]),
            version=int(data.get("version", 0)),
        )

    def to_markdown(self) -> str:
        table = md_table(
            ["id", "rule", "epoch", "groups", "hits", "misses"],
            [(it.id, it.text, it.epoch, len(it.groups), it.hits, it.misses) for it in self.items],
        )
        return f"**Guidance v{self.version}** for `{self.mission}`\n\n{table}"


class GuidanceStore:
    """Versions under `<out_dir>/guidance/`: `v0000.json`.., plus `current.json` and `best.json`."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, version: int) -> Path:
        return self.root / f"v{version:04d}.json"

    def versions(self) -> list[int]:
        return sorted(int(p.stem[1:]) for p in self.root.glob("v[0-9][0-9][0-9][0-9].json"))

    def snapshot(self, version: int) -> dict:
        path = self.path(version)
        if not path.exists():
            raise ValueError(f"guidance version {version} not found under {self.root}")
        return json.loads(path.read_text(encoding="utf-8"))

    def load(self, version: int) -> Guidance:
        return Guidance.from_dict(self.snapshot(version)["guidance"])

    def commit(
        self, guidance: Guidance, *, parent: int | None, change: dict | None, stats: dict | None = None
    ) -> Guidance:
        """Store `guidance` as a new version (or return the identical existing child of `parent`)."""
        digest = guidance.content_hash()
        for v in self.versions():
            snap = self.snapshot(v)
            if snap["parent"] == parent and snap["content_hash"] == digest:
                return self.load(v)
        self.root.mkdir(parents=True, exist_ok=True)
        version = (max(self.versions()) + 1) if self.versions() else 0
        stored = replace(guidance, version=version)
        atomic_write_json(
            self.path(version),
            {
                "version": version,
                "parent": parent,
                "change": change,
                "stats": stats or {},
                "content_hash": digest,
                "created_at": datetime.now(UTC).isoformat(),
                "guidance": stored.to_dict(),
            },
        )
        return stored

    def set_pointer(self, name: str, version: int, **info) -> None:
        if name not in ("current", "best"):
            raise ValueError(f"pointer must be 'current' or 'best', got {name!r}")
        atomic_write_json(self.root / f"{name}.json", {"version": version, "file": self.path(version).name, **info})

    def pointer(self, name: str) -> int | None:
        path = self.root / f"{name}.json"
        return json.loads(path.read_text(encoding="utf-8"))["version"] if path.exists() else None


def load_guidance(directory: str | Path, which: str = "current") -> Guidance:
    """Load the `current` or `best` version from a guidance dir or from the Stage-B out dir above it."""
    directory = Path(directory)
    if (directory / "guidance").is_dir():
        directory = directory / "guidance"
    store = GuidanceStore(directory)
    version = store.pointer(which)
    if version is None:
        raise ValueError(f"no {which!r} guidance pointer under {directory}")
    return store.load(version)
