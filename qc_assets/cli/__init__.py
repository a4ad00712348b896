"""Entry points: `python -m qc_assets.cli.demo` (make demo) and `python -m qc_assets.cli.sample_data DIR`
(make sample-data); sample_data is also the library the tests and benchmarks draw sample images from."""
