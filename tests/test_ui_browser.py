"""The Dagster UI in a real browser (Playwright driving Debian's headless Chromium) over a Postgres
instance with materialized Stage-A partitions and a Stage-B partition with its checks.

Screenshots go to docs/ui/ (the README shows them).
"""

from __future__ import annotations

import re
import shutil
from urllib.parse import quote

import dagster as dg
import pytest
from support.services import ROOT, production_deployment
from support.stage_a_smoke import SMOKE_STAGE_A

pytestmark = pytest.mark.slow

SHOTS = ROOT / "docs" / "ui"
MISSIONS = ["BBU接地线检查", "挡风板安装检查"]
TEACHER_KEY = "sk-qc-ui-secret-51c2e8"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def ui(tmp_path_factory, tiny_vlm_dir):
    """A webserver over a Postgres instance where Stage-A ran for two missions and Stage-B for one."""
    from qc_assets.cli.sample_data import write_sample_images
    from qc_assets.stage_a.assets import stage_a_summaries
    from qc_assets.stage_a.checks import asset_checks as stage_a_checks
    from qc_assets.stage_b.assets import StageBConfig, stage_b_guidance
    from qc_assets.stage_b.checks import asset_checks as stage_b_checks
    from resources.llm.resource import LLMResource
    from resources.storage import StorageResource
    from resources.vlm.resource import VLMResource

    tmp = tmp_path_factory.mktemp("ui")
    images = write_sample_images(tmp / "images", groups_per_label=1)
    data = tmp / "data"
    # the daemon's sensor watches an empty folder: it ticks (the sensor page shows it) but starts no run
    watched = tmp / "watched"
    watched.mkdir()
    dep = production_deployment(
        tmp,
        {
            "QC_DATA_ROOT": str(data),
            "QC_IMAGES_ROOT": str(watched),
            "QC_VLM_MODEL": str(tiny_vlm_dir),
            "QC_TEACHER_API_KEY": TEACHER_KEY,
        },
        executor="",
    )
    storage = StorageResource(data_root=str(data), images_root=str(images))
    tiny_b = StageBConfig(
        epochs=1,
        decode_grid=[[0.0, 1.0]],
        samples=1,
        max_new_tokens=8,
        constrained=False,
        reflection_max_new_tokens=16,
        reflection_batch_size=2,
        rounds_per_epoch=1,
        bootstrap_samples=100,
    )
    try:
        with dep.instance() as instance:
            instance.add_dynamic_partitions("missions", MISSIONS)
            for mission in MISSIONS:
                assert dg.materialize(
                    [stage_a_summaries, *stage_a_checks],
                    partition_key=mission,
                    instance=instance,
                    resources={"storage": storage, "vlm": VLMResource(model_path=str(tiny_vlm_dir))},
                    run_config=dg.RunConfig({"stage_a_summaries": {"config": SMOKE_STAGE_A}}),
                ).success
            dg.materialize(
                [stage_b_guidance, *stage_b_checks],
                partition_key=MISSIONS[1],
                instance=instance,
                resources={"storage": storage, "llm": LLMResource(batch_size=4, cpu_threads=1)},
                run_config=dg.RunConfig({"stage_b_guidance": tiny_b}),
                raise_on_error=False,
            )
        dep.daemon()
        _, url = dep.webserver()
        yield url
    finally:
        dep.stop()


@pytest.fixture(scope="module")
def page(ui):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed: run `make services`"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900}, locale="zh-CN")
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def _open(page, url: str, wait_for: str) -> str:
    page.goto(url)
    page.get_by_text(wait_for, exact=False).first.wait_for()
    page.wait_for_load_state("networkidle")
    return page.inner_text("body")


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name))


def test_asset_graph_shows_the_qc_assets_and_no_onboarding_dialog(ui, page):
    text = _open(page, f"{ui}/locations/qc_platform/asset-groups/qc", "stage_a_summaries")
    for name in ("stage_a_summaries", "stage_b_guidance", "distill_chatml", "fused_sft_checkpoint"):
        assert name in text
    assert page.locator("[role=dialog]").count() == 0, "a dialog covers the page (onboarding/community prompt?)"
    _shot(page, "asset_graph.png")


def test_stage_a_partition_shows_its_metadata(ui, page):
    text = _open(
        page, f"{ui}/assets/stage_a_summaries?view=partitions&partition={quote(MISSIONS[0])}", "stage_a/groups"
    )
    assert MISSIONS[0] in text
    for key in ("dagster/row_count", "stage_a/images_summarised", "model_fingerprint", "model_note", "seed"):
        assert key in text, f"metadata key {key} not on the partition page"
    _shot(page, "stage_a_partition.png")


def test_stage_b_checks_show_their_status(ui, page):
    text = _open(page, f"{ui}/assets/stage_b_guidance?view=checks", "stage_b_guidance_schema")
    for check in ("stage_b_guidance_schema", "stage_b_not_worse_than_baseline", "stage_b_converged"):
        assert check in text
    assert re.search(r"Passed|Failed|Warning", text), "no check status on the checks page"
    _shot(page, "stage_b_checks.png")


def test_sensor_page_shows_the_sensor_and_its_job(ui, page):
    url = f"{ui}/locations/qc_platform/sensors/new_images_sensor"
    text = _open(page, url, "new_images_sensor")
    assert "stage_a_job" in text
    for _ in range(60):  # the daemon's first tick, shown on reload
        if "never run" not in text:
            break
        page.wait_for_timeout(3000)
        text = _open(page, url, "new_images_sensor")
    assert "Sensor has never run" not in text, "the daemon never ticked the sensor"
    assert "daemon is not running" not in text
    _shot(page, "sensor.png")


def test_the_ui_shows_the_secret_name_never_its_value(ui, page):
    text = _open(page, f"{ui}/locations/qc_platform/resources/teacher_llm", "teacher_llm")
    assert "QC_TEACHER_API_KEY" in text
    assert TEACHER_KEY not in page.content()
    runs = _open(page, f"{ui}/runs", "Runs")
    assert TEACHER_KEY not in runs
