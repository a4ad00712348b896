"""Run bookkeeping: the run-state file and the cached reflection calls.

`state.json` says which run is in progress and where it is. A run that finds the previous run still
marked `running` (it crashed) resumes under the same run id; otherwise it starts `run-000N+1`.
Nothing here deletes: logs are append-only and a new run only adds rows and versions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from qc_assets.stage_b.prompts import prompt_hash
from qc_assets.stage_b.rollout import CallCounter
from resources.llm import ChatLLM, DecodeParams
from resources.store import append_jsonl, atomic_write_json, iter_jsonl


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class RunState:
    path: Path
    data: dict

    @classmethod
    def start(cls, out_dir: Path, config: dict) -> tuple[RunState, bool]:
        """(state, resumed): resume a crashed run's id, else open a new run."""
        path = Path(out_dir) / "state.json"
        old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
        history = list(old.get("history", [])) if old else []
        if old and old.get("status") == "running":
            data = {**old, "resumed_at": _now(), "resumes": int(old.get("resumes", 0)) + 1, "config": config}
            resumed = True
        else:
            if old:
                history.append({k: old.get(k) for k in ("run_id", "status", "started_at", "finished_at")})
            data = {
                "run_id": f"run-{len(history) + 1:04d}",
                "status": "running",
                "started_at": _now(),
                "config": config,
                "history": history,
                "resumes": 0,
            }
            resumed = False
        state = cls(path, data)
        state.update(phase="start")
        return state, resumed

    @property
    def run_id(self) -> str:
        return self.data["run_id"]

    def update(self, **fields) -> None:
        self.data.update(fields, updated_at=_now())
        atomic_write_json(self.path, self.data)

    def finish(self, **fields) -> None:
        self.update(status="completed", finished_at=_now(), **fields)

    def fail(self, error: str, **fields) -> None:
        """A run that stopped on an error it reported (not a crash): the next run starts a new run id,
        and distillation refuses it like an unfinished one."""
        self.update(status="failed", finished_at=_now(), error=error, **fields)


class ReflectionCache:
    """Reflection calls keyed by (model, prompt hash, decode) in `reflections.jsonl`, so a resumed
    run replays the same proposals instead of asking again (and getting different ones)."""

    def __init__(self, llm: ChatLLM, out_dir: Path, counter: CallCounter, run_id: str) -> None:
        self.llm = llm
        self.path = Path(out_dir) / "reflections.jsonl"
        self.counter = counter
        self.run_id = run_id
        self._cache = {tuple(r["key"]): r for r in iter_jsonl(self.path) if r.get("error") is None}

    def ask(self, messages: list[dict], params: DecodeParams, **context) -> dict:
        key = (
            self.llm.fingerprint,
            prompt_hash(messages),
            params.seed,
            params.max_new_tokens,
            params.temperature,
            params.top_p,
        )
        if params.json_schema is not None:  # a constrained answer differs; older keys stay valid
            key += ("json_schema", json.dumps(params.json_schema, sort_keys=True))
        if key in self._cache:
            self.counter.cached += 1
            return self._cache[key]
        ((completion,),) = self.llm.chat([messages], params)
        self.counter.reflection_calls += 1
        self.counter.count_attempts(completion)
        self.counter.chat_requests += 1
        self.counter.prompt_tokens += completion.prompt_tokens
        self.counter.completion_tokens += completion.completion_tokens
        row = {
            "key": list(key),
            "run_id": self.run_id,
            **context,
            "prompt_hash": key[1],
            "seed": params.seed,
            "messages": messages,
            "raw": completion.text,
            "error": completion.error,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
        }
        append_jsonl(self.path, [row])
        if completion.ok:
            self._cache[key] = row
        else:
            self.counter.failed_reflection_calls += 1
        return row
