"""distilabel side of benchmarks/fastdistill_teacher.py; runs in a separate venv with distilabel 1.5.x.

Reads a JSON spec (server url, conversations [system, user], decode settings), runs
LoadDataFromDicts >> TextGeneration(OpenAILLM) and prints one JSON line with wall time and token
counts. It imports nothing from this project so it can run in any interpreter.
"""

import json
import sys
import time

from distilabel.models import OpenAILLM
from distilabel.pipeline import Pipeline
from distilabel.steps import LoadDataFromDicts
from distilabel.steps.tasks import TextGeneration


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    systems = {conv[0]["content"] for conv in spec["conversations"]}
    if len(systems) != 1:
        raise SystemExit(f"expected one shared system prompt, got {len(systems)}")
    data = [{"instruction": conv[1]["content"]} for conv in spec["conversations"]]
    with Pipeline(name="fastdistill-bench", cache_dir=spec["cache_dir"]) as pipeline:
        load = LoadDataFromDicts(data=data, batch_size=len(data))
        generate = TextGeneration(
            llm=OpenAILLM(
                model=spec["model"],
                base_url=spec["url"],
                api_key="none",
                timeout=600,
                max_retries=0,
                generation_kwargs={"max_new_tokens": spec["max_new_tokens"], "temperature": spec["temperature"]},
            ),
            system_prompt=systems.pop(),
            input_batch_size=spec["batch_size"],
        )
        load >> generate
    start = time.perf_counter()
    distiset = pipeline.run(use_cache=False)
    wall = time.perf_counter() - start
    rows = distiset["default"]["train"]
    output_tokens, failed = 0, 0
    for row in rows:
        stats = row["distilabel_metadata"].get("statistics_text_generation_0") or {}
        value = stats.get("output_tokens") or 0  # an int per row in 1.5.x, a list in some versions
        output_tokens += sum(value) if isinstance(value, list) else int(value)
        failed += row["generation"] is None
    print(json.dumps({"wall_s": wall, "output_tokens": output_tokens, "samples": len(rows), "failed": failed}))


if __name__ == "__main__":
    main()
