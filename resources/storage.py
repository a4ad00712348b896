"""Dagster resource naming the data root; assets write under `<data_root>/<asset>/<partition>/`."""

from pathlib import Path

import dagster as dg

from resources.store import DEFAULT_DATA_ROOT, asset_dir, data_root


class StorageResource(dg.ConfigurableResource):
    data_root: str = DEFAULT_DATA_ROOT
    # where mission photo folders arrive; empty = `<data_root>/images`
    images_root: str = ""

    def root(self) -> Path:
        return Path(self.data_root).resolve()

    def images(self) -> Path:
        return Path(self.images_root).resolve() if self.images_root else self.root() / "images"

    def asset_dir(self, asset: str, partition: str) -> Path:
        return asset_dir(self.root(), asset, partition)


def storage_from_env() -> StorageResource:
    """QC_DATA_ROOT and QC_IMAGES_ROOT: what the definitions use, and what code that runs outside a run
    (an automation condition) reads."""
    return StorageResource(data_root=str(data_root()), images_root=dg.EnvVar("QC_IMAGES_ROOT").get_value(""))
