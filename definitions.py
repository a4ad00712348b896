"""The one Dagster code location: assets, checks, sensors, jobs and resources.

Loads no model library: models load inside resources when a run needs them. Resources read their
settings from the environment (QC_DATA_ROOT, QC_VLM_*, QC_LLM_*, QC_TEACHER_*), so the same
definitions run the CPU demo and production; see README "Configuration".
"""

import os
from pathlib import Path

import dagster as dg
import yaml

from qc_assets import run_health, sensors
from qc_assets.distill import assets as distill_assets
from qc_assets.distill import checks as distill_checks
from qc_assets.fastdistill import assets as fastdistill_assets
from qc_assets.stage_a import assets as stage_a_assets
from qc_assets.stage_a import checks as stage_a_checks
from qc_assets.stage_a import jobs as stage_a_jobs
from qc_assets.stage_b import assets as stage_b_assets
from qc_assets.stage_b import checks as stage_b_checks
from qc_assets.stage_b.automation import relearn_automation
from qc_assets.student import assets as student_assets
from qc_assets.student import checks as student_checks
from qc_assets.student import jobs as student_jobs
from qc_assets.verdicts import assets as verdicts_assets
from qc_assets.verdicts import checks as verdicts_checks
from qc_assets.verdicts import health_assets, inbox
from qc_assets.verdicts import jobs as verdicts_jobs
from resources.env import env, env_number
from resources.llm.resource import LLMResource
from resources.storage import storage_from_env
from resources.store import data_root
from resources.training.resource import StudentTrainingResource
from resources.training.text_student import text_student_from_env
from resources.vlm.resource import vlm_from_env


def llm_from_env(prefix: str) -> LLMResource:
    """An LLMResource from `<prefix>_*` variables (README "Configuration"); default = embedded SmolLM2 on
    llama.cpp in-process."""
    settings = {
        "backend": env(f"{prefix}_BACKEND", "llama_cpp"),
        "model_path": env(f"{prefix}_MODEL_PATH", ""),
        "base_url": env(f"{prefix}_BASE_URL", ""),
        "model": env(f"{prefix}_MODEL", ""),
        "device": env(f"{prefix}_DEVICE", env("QC_DEVICE", "cpu")),
        "dtype": env(f"{prefix}_DTYPE", "float32"),
        "structured_output": env(f"{prefix}_STRUCTURED_OUTPUT", "none"),
        "thinking": env(f"{prefix}_THINKING", "off"),
        "max_in_flight": env_number(f"{prefix}_MAX_IN_FLIGHT", "8", int),
        # a 32B teacher on a busy server or a local Ollama answers slower than the SDK's 60 s default
        "timeout_s": env_number(f"{prefix}_TIMEOUT_S", "60", float),
        "max_retries": env_number(f"{prefix}_MAX_RETRIES", "3", int),
        "llama_threads": env_number(f"{prefix}_LLAMA_THREADS", "1", int),
        "n_gpu_layers": env_number(f"{prefix}_N_GPU_LAYERS", "0", int),
        "tensor_parallel_size": env_number(f"{prefix}_TENSOR_PARALLEL_SIZE", "1", int),
        "gpu_memory_utilization": env_number(f"{prefix}_GPU_MEMORY_UTILIZATION", "0.9", float),
        # one torch thread by default: on a small shared CPU, torch's default threads oversubscribe the
        # cores and transformers decoding slows down many times; 0 = torch default
        "cpu_threads": env_number("QC_CPU_THREADS", "1", int),
    }
    if f"{prefix}_API_KEY" in os.environ:  # a secret: only ever through EnvVar
        settings["api_key"] = dg.EnvVar(f"{prefix}_API_KEY")
    return LLMResource(**settings)


CELERY_CONFIG = Path(__file__).resolve().parent / "deploy" / "production" / "celery.yaml"


def executor_from_env() -> dg.ExecutorDefinition | None:
    """`QC_EXECUTOR`: unset = Dagster's default (steps in subprocesses of the run worker); `celery` = each
    step is a task on the Celery broker, gpu-pool steps on the `gpu` queue (qc_assets/gpu_steps.py).

    The executor reads the same file as the workers (deploy/production/celery.yaml), whose broker
    URLs come from the environment when a run starts, so they never enter run config.
    """
    name = env("QC_EXECUTOR", "")
    if not name:
        return None
    if name != "celery":
        raise ValueError(f"QC_EXECUTOR must be empty or 'celery', got {name!r}")
    from dagster_celery import celery_executor

    config = yaml.safe_load(CELERY_CONFIG.read_text(encoding="utf-8"))["execution"]["config"]
    return celery_executor.configured(config, name="celery_executor")


qc_pipeline = dg.define_asset_job(
    "qc_pipeline",
    selection=dg.AssetSelection.groups("qc"),
    description="Every per-mission asset and its checks, for one mission partition.",
)

# each stage folder's assets, checks (checks.py) and jobs (jobs.py), in pipeline order; qc_assets/verdicts/ is the
# production path (inbox -> qc_verdicts -> mission_health)
defs = dg.Definitions(
    assets=[
        *stage_a_assets.assets,
        *stage_b_assets.assets,
        *distill_assets.assets,
        *inbox.assets,
        *verdicts_assets.assets,
        *health_assets.assets,
        *student_assets.assets,
        *fastdistill_assets.assets,
    ],
    asset_checks=[
        *stage_a_checks.asset_checks,
        *stage_b_checks.asset_checks,
        *distill_checks.asset_checks,
        *verdicts_checks.asset_checks,
        *student_checks.asset_checks,
        *fastdistill_assets.asset_checks,
    ],
    jobs=[qc_pipeline, *stage_a_jobs.jobs, *verdicts_jobs.jobs, *student_jobs.jobs, *fastdistill_assets.jobs],
    sensors=[*sensors.sensors, run_health.run_health_sensor, health_assets.health_automation, relearn_automation],
    executor=executor_from_env(),
    resources={
        # what one step hands the next (Stage-A's shard list and shard markers, a few hundred bytes): under the
        # data root, which several hosts share (NFS), so a shard step on any Celery worker reads its task
        "io_manager": dg.FilesystemIOManager(base_dir=str(data_root() / "dagster_io")),
        "storage": storage_from_env(),
        "vlm": vlm_from_env(),
        # the student's base checkpoint; empty = refuse, unless QC_STUDENT_SMOKE_MODEL=1 (the demo) allows the
        # random-weight smoke model
        "student": StudentTrainingResource(
            model_path=env("QC_STUDENT_MODEL", ""),
            device=env("QC_DEVICE", "cpu"),
            dtype=env("QC_DTYPE", "float32"),
            smoke_model=env("QC_STUDENT_SMOKE_MODEL", "0") == "1",
        ),
        # FastDistill's text student: base model (QC_TEXT_STUDENT_MODEL; empty = embedded SmolLM2), device, dtype
        "text_student": text_student_from_env(),
        "llm": llm_from_env("QC_LLM"),
        "teacher_llm": llm_from_env("QC_TEACHER"),
    },
)
