#!/usr/bin/env bash
# The main job end to end on NYC flights 2013:
# data → config → prepare → tune → train a large teacher → shrink it → evaluate → predict → export → serve.
# Run through `make demo`, which puts .venv/bin first on PATH.
set -euo pipefail
out=demo-out
rm -rf "$out"  # every run starts afresh: new data, a new study, versions v1 (tune), v2 (teacher), v3 (shrunk)
mkdir -p "$out"

echo "== data: flights of January–November to learn from, December held out"
leanml datasets flights --months 1-11 -o "$out/flights.parquet"
leanml datasets flights --months 12 -o "$out/december.parquet"

echo "== init: a starter config inferred from the data"
rm -f "$out/leanml.yaml"
leanml init "$out/flights.parquet" --target delayed -o "$out/leanml.yaml"

echo "== prepare: split, clean, fit the preprocessing, data-quality report"
leanml prepare "$out/leanml.yaml" --rejects "$out/rejects.parquet"

echo "== tune: a small TPE search over the default space (learning rate, sizes, dropout, embeddings; 3 short trials)"
leanml tune "$out/leanml.yaml" --trials 3 --set train.epochs=1 --set train.warmup_epochs=0

echo "== train: a large teacher, a residual MLP (3 epochs for the demo), bundled into the model store"
leanml train "$out/leanml.yaml" --set model.arch=resmlp --set "model.hidden=[128, 256]" --set model.blocks=2 \
  --set model.dropout=0.0 --set train.epochs=3

echo "== shrink: distil, prune and quantize the teacher within 1 point of ROC AUC; a new version"
leanml shrink "$out/models/flights@v2" --max-metric-drop 0.01 --set shrink.distill.epochs=4
leanml models promote flights --store "$out/models"
leanml models list --store "$out/models"

echo "== evaluate and predict on the held-out December flights"
leanml evaluate "$out/models/flights" "$out/december.parquet"
leanml predict "$out/models/flights" "$out/december.parquet" -o "$out/december-predictions.parquet" \
  --keep carrier,flight,origin,dest

echo "== export: the shrunk model's serving graph as a Triton model repository (runs with no Python)"
leanml export triton "$out/models/flights" -o "$out/triton-models"

echo "== serve: the shrunk model; ask it over HTTP (V1 and V2), stop the server"
port=${LEANML_DEMO_PORT:-8765}
leanml serve "$out/models" --port "$port" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
python scripts/demo_client.py "http://127.0.0.1:$port" "$out/december.parquet"
kill "$server"
wait "$server" 2>/dev/null || true
trap - EXIT
echo "== done: outputs in $out/"
