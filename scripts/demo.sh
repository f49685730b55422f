#!/usr/bin/env bash
# The main job end to end on NYC flights 2013: write the data, infer a config, prepare it.
# Run through `make demo`, which puts .venv/bin first on PATH.
set -euo pipefail
out=demo-out
mkdir -p "$out"
leanml datasets flights -o "$out/flights.parquet"
rm -f "$out/leanml.yaml"
leanml init "$out/flights.parquet" --target delayed -o "$out/leanml.yaml"
leanml prepare "$out/leanml.yaml" --rejects "$out/rejects.parquet"
