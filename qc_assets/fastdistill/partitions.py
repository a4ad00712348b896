"""FastDistill runs: one dynamic partition per run_id; every stage writes under it."""

import dagster as dg

fastdistill_runs = dg.DynamicPartitionsDefinition(name="fastdistill_runs")
