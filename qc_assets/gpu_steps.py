"""How model-calling steps run in production: their Celery queue and their retry policy.

The assets declare `pool="gpu"` (a Dagster concurrency pool, limited in the instance config) and the
tags and policy below, so the Celery executor routes them to the workers that own GPUs and a
transient provider failure (a 503 from the vLLM server, a dropped connection) is retried with
backoff instead of failing the run. They say so with one decorator: `@mission_model_asset(...)` for a
per-mission asset, `@model_asset(...)` for another (a cross-mission student, a FastDistill run), and
`@model_op(...)` for an op of a graph-backed asset (a Stage-A shard step).
"""

from collections.abc import Callable

import dagster as dg

from qc_assets.partitions import mission_partitions
from resources.env import env_number

GPU_POOL = "gpu"
# dagster-celery routes a step to the queue named by this op tag; workers on GPU nodes listen on it
GPU_QUEUE = "gpu"
GPU_OP_TAGS = {"dagster-celery/queue": GPU_QUEUE}


def model_retry_policy() -> dg.RetryPolicy | None:
    """`QC_MODEL_RETRIES` (default 2; 0 = none) retries, `QC_MODEL_RETRY_DELAY_S` (default 10) apart,
    doubling each time with jitter. Read when the code location loads, like every other setting."""
    retries = env_number("QC_MODEL_RETRIES", "2", int)
    delay = env_number("QC_MODEL_RETRY_DELAY_S", "10", float)
    if retries < 0 or delay < 0:
        raise ValueError(f"QC_MODEL_RETRIES={retries} and QC_MODEL_RETRY_DELAY_S={delay} must be >= 0")
    if retries == 0:
        return None
    return dg.RetryPolicy(max_retries=retries, delay=delay, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


MODEL_RETRY = model_retry_policy()


def _model_step(kwargs: dict, tags_key: str, retry: bool) -> dict:
    if "pool" in kwargs or "retry_policy" in kwargs:
        raise TypeError(
            "a model step's pool and retry policy come from qc_assets/gpu_steps.py; pass retry=False "
            "for a step that must not be retried"
        )
    return {
        **kwargs,
        "pool": GPU_POOL,
        tags_key: {**GPU_OP_TAGS, **(kwargs.get(tags_key) or {})},
        "retry_policy": MODEL_RETRY if retry else None,
    }


def model_asset(*, retry: bool = True, **kwargs) -> Callable:
    """`dg.asset(**kwargs)` for a step that loads or calls a model: in the `gpu` pool, on the Celery `gpu`
    queue (merged into any `op_tags` given), retried by MODEL_RETRY. `retry=False` for a step a retry
    would only repeat (a training run: its failure is not a provider's passing outage)."""
    return dg.asset(**_model_step(kwargs, "op_tags", retry))


def mission_model_asset(*, retry: bool = True, **kwargs) -> Callable:
    """`model_asset` partitioned by mission (`missions`), the shape of every per-mission model step."""
    return model_asset(retry=retry, partitions_def=mission_partitions, **kwargs)


def model_op(*, retry: bool = True, **kwargs) -> Callable:
    """`dg.op(**kwargs)` with the same pool, queue tag (merged into any `tags`) and retry policy."""
    return dg.op(**_model_step(kwargs, "tags", retry))
