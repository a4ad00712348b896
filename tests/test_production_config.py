"""The shipped production files load and validate, and agree with each other: the Celery config
against dagster-celery's own schema, the docker-compose topology (which cannot run here: no Docker)
against the variables the instance and Celery configs read. Each check is shown failing on a bad file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster_celery.cli import get_validated_config

ROOT = Path(__file__).resolve().parents[1]
PROD = ROOT / "deploy" / "production"
DAGSTER_SERVICES = ("code", "webserver", "daemon", "worker-gpu-0", "worker-gpu-1", "worker-cpu")


def env_vars_read(path: Path) -> set[str]:
    """Names in `{env: NAME}` sources of a Dagster YAML file."""
    return set(re.findall(r"\{env:\s*([A-Z0-9_]+)\}", path.read_text(encoding="utf-8")))


def missing_env(compose: dict, needed: set[str]) -> dict[str, set[str]]:
    services = compose["services"]
    return {
        name: needed - set(services[name].get("environment", {}))
        for name in DAGSTER_SERVICES
        if needed - set(services[name].get("environment", {}))
    }


def _compose() -> dict:
    return yaml.safe_load((PROD / "docker-compose.yaml").read_text(encoding="utf-8"))


def test_celery_config_validates_against_the_executor_schema(monkeypatch):
    monkeypatch.setenv("QC_CELERY_BROKER", "redis://:pw@127.0.0.1:6379/0")
    monkeypatch.setenv("QC_CELERY_BACKEND", "redis://:pw@127.0.0.1:6379/1")
    config = get_validated_config(str(PROD / "celery.yaml"))
    assert config["broker"] == "redis://:pw@127.0.0.1:6379/0"
    assert config["config_source"]["worker_prefetch_multiplier"] == 1


def test_celery_config_with_a_bad_key_is_refused(tmp_path):
    bad = tmp_path / "celery.yaml"
    bad.write_text("execution:\n  config:\n    brokr: redis://127.0.0.1\n")
    with pytest.raises(dg.DagsterInvalidConfigError):
        get_validated_config(str(bad))


def test_compose_gives_every_dagster_process_what_the_configs_read():
    needed = env_vars_read(PROD / "dagster.yaml") | env_vars_read(PROD / "celery.yaml") | {"DAGSTER_HOME"}
    needed |= env_vars_read(PROD / "workspace.yaml")
    assert {"DAGSTER_PG_PASSWORD", "QC_CELERY_BROKER", "QC_CODE_SERVER_HOST"} <= needed
    assert missing_env(_compose(), needed) == {}
    # ... and the check notices a service that lacks one
    broken = _compose()
    broken["services"]["daemon"]["environment"] = {"DAGSTER_HOME": "/opt/dagster/home"}
    assert "DAGSTER_PG_PASSWORD" in missing_env(broken, needed)["daemon"]


def test_each_gpu_worker_sees_only_its_own_gpu():
    """GPU pinning in production: one Celery worker per GPU, one step at a time, CUDA_VISIBLE_DEVICES = its
    GPU, device `cuda`; so a Stage-A shard step loads the model once, on the GPU of the worker it lands on."""
    workers = {name: s for name, s in _compose()["services"].items() if name.startswith("worker-gpu-")}
    assert len(workers) >= 2
    visible = [s["environment"]["CUDA_VISIBLE_DEVICES"] for s in workers.values()]
    assert all("," not in v for v in visible) and len(set(visible)) == len(visible), visible
    for name, s in workers.items():
        assert s["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == [
            s["environment"]["CUDA_VISIBLE_DEVICES"]
        ], name
        assert s["environment"]["QC_DEVICE"] == "cuda" and "QC_VLM_DEVICE" not in s["environment"], name
        assert s["command"][s["command"].index("--concurrency") + 1] == "1", name


def test_compose_routes_gpu_steps_to_gpu_workers_and_holds_no_literal_secret():
    compose = _compose()
    gpu_worker = compose["services"]["worker-gpu-0"]
    assert gpu_worker["command"][gpu_worker["command"].index("-q") + 1] == "gpu"
    assert "devices" in str(gpu_worker["deploy"])
    secret_lines = [
        line
        for line in (PROD / "docker-compose.yaml").read_text(encoding="utf-8").splitlines()
        if re.search(r"PASSWORD:|API_KEY:|requirepass|redis://", line) and not line.lstrip().startswith("#")
    ]
    assert len(secret_lines) >= 6
    assert [line for line in secret_lines if "${" not in line] == [], "a literal secret in the compose file"


def test_production_definitions_use_the_celery_executor_with_the_gpu_queue():
    code = (
        "import definitions, json; d = definitions.defs; "
        "g = d.resolve_assets_def('stage_a_summaries').node_def; "
        "s = next(n.definition for n in g.nodes if n.name == 'stage_a_shard'); "
        "print(json.dumps([d.resolve_job_def('stage_a_job').executor_def.name, s.tags.get('dagster-celery/queue'),"
        " s.pool, s.retry_policy.max_retries]))"
    )
    env = {
        "QC_EXECUTOR": "celery",
        "QC_CELERY_BROKER": "redis://127.0.0.1:1/0",
        "QC_CELERY_BACKEND": "redis://127.0.0.1:1/0",
        "QC_MODEL_RETRIES": "3",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '["celery_executor", "gpu", "gpu", 3]'
    bad = subprocess.run(
        [sys.executable, "-c", "import definitions"],
        cwd=ROOT,
        env={**env, "QC_EXECUTOR": "k8s"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "QC_EXECUTOR must be empty or 'celery'" in bad.stderr


def test_model_retry_policy_comes_from_the_environment(monkeypatch):
    from qc_assets.gpu_steps import model_retry_policy

    monkeypatch.setenv("QC_MODEL_RETRIES", "3")
    monkeypatch.setenv("QC_MODEL_RETRY_DELAY_S", "2")
    policy = model_retry_policy()
    assert (policy.max_retries, policy.delay, policy.backoff) == (3, 2.0, dg.Backoff.EXPONENTIAL)
    monkeypatch.setenv("QC_MODEL_RETRIES", "0")
    assert model_retry_policy() is None
    monkeypatch.setenv("QC_MODEL_RETRIES", "-1")
    with pytest.raises(ValueError, match="QC_MODEL_RETRIES=-1"):
        model_retry_policy()
    monkeypatch.setenv("QC_MODEL_RETRIES", "two")
    with pytest.raises(ValueError, match="QC_MODEL_RETRIES must be an integer, got 'two'"):
        model_retry_policy()


def test_relearn_settings_name_a_malformed_variable(monkeypatch):
    from qc_assets.stage_b.relearn import RelearnSettings

    monkeypatch.setenv("QC_RELEARN_COOLDOWN_S", "a day")
    with pytest.raises(ValueError, match="QC_RELEARN_COOLDOWN_S must be a number, got 'a day'"):
        RelearnSettings.from_env()


def test_every_api_key_reaches_its_resource_as_an_env_var_not_a_value():
    code = (
        "import definitions; r = definitions.defs.resources; "
        "print(*[type(r[k].api_key).__name__ + ':' + str(r[k].api_key.env_var_name) "
        "for k in ('vlm', 'llm', 'teacher_llm')])"
    )
    env = {"QC_VLM_API_KEY": "sk-v", "QC_LLM_API_KEY": "sk-l", "QC_TEACHER_API_KEY": "sk-t", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["EnvVar:QC_VLM_API_KEY", "EnvVar:QC_LLM_API_KEY", "EnvVar:QC_TEACHER_API_KEY"]
