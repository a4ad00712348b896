"""Mission partitions: one dynamic partition per mission folder, keyed by the mission name as written."""

import dagster as dg

mission_partitions = dg.DynamicPartitionsDefinition(name="missions")
