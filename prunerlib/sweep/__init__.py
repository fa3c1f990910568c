"""The sweep service: a YAML spec → many trials on Ray Tune (grid, or an Optuna search) →
one Parquet file of result rows.

Data flows one way: `spec` parses and validates (no Ray), `plan` expands it into trial
configurations and packs (no Ray), `runner` runs the packs as Tune trials (`trainable` is
what each trial runs on a worker, `cluster` joins and checks the Ray cluster), `store` keeps each
finished trial's rows in the sweep folder and consolidates them, `summary` prints the end.
The one-trial core (`prunerlib.pipeline`) knows nothing of any of this.
"""
