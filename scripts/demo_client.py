"""Demo client: waits for the server, then sends one KServe V1 and one Open Inference Protocol request."""

from __future__ import annotations

import json
import sys
import time

import httpx
import numpy as np
import polars as pl
import tritonclient.http as triton


def wait_ready(url: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("the server did not become ready")


def main(url: str, data: str) -> None:
    wait_ready(url)
    meta = httpx.get(f"{url}/v1/models/flights").json()
    inputs = [column["name"] for column in meta["inputs"]]
    rows = (
        pl.read_parquet(data)
        .filter(pl.col("dep_delay").is_not_null())
        .head(3)
        .with_columns(pl.col("time_hour").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        .select(inputs)
    )
    print(f"model flights {meta['version']} ({meta['task']}), inputs: {', '.join(inputs)}")

    body = {"instances": rows.to_dicts()}
    response = httpx.post(f"{url}/v1/models/flights:predict", json=body)
    print(f"V1  POST /v1/models/flights:predict → {response.status_code}")
    print(json.dumps(response.json(), indent=2))

    client = triton.InferenceServerClient(url.removeprefix("http://"))
    tensors = []
    for name in inputs:
        column = rows[name]
        numeric = column.dtype.is_numeric()
        values = column.cast(pl.Float64).to_numpy() if numeric else np.array(column.to_list(), dtype=object)
        tensor = triton.InferInput(name, [len(values)], "FP64" if numeric else "BYTES")
        tensor.set_data_from_numpy(values)
        tensors.append(tensor)
    result = client.infer("flights", tensors)
    print("V2  tritonclient infer → prediction", result.as_numpy("prediction").tolist())
    print("                       probabilities", np.round(result.as_numpy("probabilities"), 4).tolist())

    bad = httpx.post(
        f"{url}/v1/models/flights:predict",
        json={"instances": [{**body["instances"][0], "dep_delay": "soon"}]},
    )
    print(f"bad input → {bad.status_code} {bad.json()}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
