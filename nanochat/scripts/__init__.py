"""Entry points, one per stage (upstream's scripts/): `python -m nanochat.scripts.<stage> --help`. Each is what its
Snakemake rule runs, and its config section and record file carry its name."""
