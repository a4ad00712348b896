"""How model-calling steps run in production: their Celery queue and their retry policy.

The assets declare `pool="gpu"` (a Dagster concurrency pool, limited in the instance config) and the
tags and policy below, so the Celery executor routes them to the workers that own GPUs and a
transient provider failure (a 503 from the vLLM server, a dropped connection) is retried with
backoff instead of failing the run.
"""

import os

import dagster as dg

GPU_POOL = "gpu"
# dagster-celery routes a step to the queue named by this op tag; workers on GPU nodes listen on it
GPU_QUEUE = "gpu"
GPU_OP_TAGS = {"dagster-celery/queue": GPU_QUEUE}


def model_retry_policy() -> dg.RetryPolicy | None:
    """`QC_MODEL_RETRIES` (default 2; 0 = none) retries, `QC_MODEL_RETRY_DELAY_S` (default 10) apart,
    doubling each time with jitter. Read when the code location loads, like every other setting."""
    retries = int(os.environ.get("QC_MODEL_RETRIES", "2"))
    delay = float(os.environ.get("QC_MODEL_RETRY_DELAY_S", "10"))
    if retries < 0 or delay < 0:
        raise ValueError(f"QC_MODEL_RETRIES={retries} and QC_MODEL_RETRY_DELAY_S={delay} must be >= 0")
    if retries == 0:
        return None
    return dg.RetryPolicy(max_retries=retries, delay=delay, backoff=dg.Backoff.EXPONENTIAL,
                          jitter=dg.Jitter.PLUS_MINUS)


MODEL_RETRY = model_retry_policy()
