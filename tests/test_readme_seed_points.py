"""The README tells what the code does for the seed points of issue 20 (read as text: a stale
sentence here is the bug a QC team following the README would hit)."""

from pathlib import Path

from qc_assets.distill.config import SOURCES
from qc_assets.verdicts.config import VERDICT_MODELS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _paragraph(marker: str) -> str:
    start = README.index(marker)
    end = README.find("\n- **", start + 1)
    return README[start:end]


def test_the_verdict_model_paragraph_names_every_choice():
    text = _paragraph("- **Model choice**")
    assert "only choice" not in text
    for choice in VERDICT_MODELS:
        assert f"`{choice}`" in text


def test_the_variables_table_documents_timeouts_and_retries():
    assert "| `_TIMEOUT_S` / `_MAX_RETRIES` |" in README
    assert "| `QC_VLM_MAX_IN_FLIGHT` / `QC_VLM_TIMEOUT_S` / `QC_VLM_MAX_RETRIES` |" in README


def test_the_distill_sources_are_documented():
    for source in SOURCES:
        assert f"source: {source}" in README


def test_the_fastdistill_recipes_section_runs_every_shipped_recipe():
    from pathlib import Path

    section = README[README.index("## FastDistill recipes") :]
    section = section[: section.index("\n## ")]
    recipes = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "configs" / "fastdistill").glob("*.yaml"))
    assert len(recipes) == 4
    for name in recipes:
        assert f"--config configs/fastdistill/{name}" in section
    assert "http://localhost:11434/v1" in section and "vllm serve" in section
    assert "python -m qc_assets.fastdistill.compare" in section and "dpo_checkpoint" in section
