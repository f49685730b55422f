"""A request's answer never depends on its batch-mates, and a bad value fails only its own request."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import httpx
import polars as pl
import pytest

from leanml.bundle import load_bundle
from leanml.serve.engine import Answer, Job, ServedModel
from leanml.serve.validation import RequestError
from serving import running_server

INPUTS = ["dep_delay", "distance", "sched_dep_time", "carrier", "dest", "origin", "time_hour"]
POISON = [
    {"carrier": "\ud800"},  # a lone surrogate: valid JSON, not valid Unicode
    {"time_hour": "\udfff"},
    {"dep_delay": "not a number"},
    {"dep_delay": 1e300},
    {"carrier": "ZZ"},  # unknown under handle_unknown: error
    {"distance": 5.0},  # outside [50, 3000] under serving: reject
]


@pytest.fixture(scope="module")
def served(trained_flights: dict[str, Any]) -> ServedModel:
    return ServedModel(load_bundle(trained_flights["outcome"].bundle.path))


@pytest.fixture(scope="module")
def rows(trained_flights: dict[str, Any]) -> list[dict[str, Any]]:
    frame = pl.read_parquet(trained_flights["data"]).filter(pl.col("distance") <= 3000).slice(300, 40)
    frame = frame.select(INPUTS).with_columns(pl.col("time_hour").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return frame.to_dicts()


def _job(instances: list[dict[str, Any]]) -> Job:
    loop = asyncio.new_event_loop()
    try:
        future = loop.create_future()
    finally:
        loop.close()
    columns = {name: [row.get(name) for row in instances] for name in INPUTS}
    return Job(columns=columns, rows=len(instances), future=future, deadline=1e18)


def _answer(result: Answer | RequestError) -> Any:
    if isinstance(result, RequestError):
        return (result.status, json.dumps(result.details, sort_keys=True))
    return (result.predictions, result.probabilities.round(6).tolist(), result.flags)


@pytest.mark.parametrize("poison", POISON, ids=lambda p: next(iter(p)))
def test_one_bad_request_fails_alone_in_its_batch(
    served: ServedModel, rows: list[dict[str, Any]], poison: dict[str, Any]
) -> None:
    alone = [_answer(served.infer([_job([row])])[0]) for row in rows]
    bad = {**rows[0], **poison}
    jobs = [_job([row]) for row in rows]
    jobs.insert(17, _job([bad]))
    answers = served.infer(jobs)
    verdict = answers.pop(17)
    assert isinstance(verdict, RequestError) and verdict.status == 422
    field = next(iter(poison))
    assert [e["field"] for e in verdict.details] == [field]
    assert [_answer(a) for a in answers] == alone


def test_json_types_do_not_leak_between_requests(served: ServedModel, rows: list[dict[str, Any]]) -> None:
    row = rows[0]
    as_bool = {**row, "dep_delay": True}
    as_float_category = {**row, "origin": 7.0}
    for odd in (as_bool, as_float_category):
        alone = _answer(served.infer([_job([odd])])[0])
        mixed = served.infer([_job([rows[1]]), _job([odd]), _job([{**rows[2], "dep_delay": "3"}])])
        assert _answer(mixed[1]) == alone
    as_one = {**row, "dep_delay": 1}
    assert _answer(served.infer([_job([as_bool])])[0]) == _answer(served.infer([_job([as_one])])[0])


async def _round(url: str, good: list[dict[str, Any]], bad: dict[str, Any], seed: int) -> list[int]:
    bodies = [json.dumps({"instances": [row]}) for row in good]
    position = random.Random(seed).randrange(len(bodies) + 1)
    bodies.insert(position, json.dumps({"instances": [bad]}, ensure_ascii=True))
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=30) as client:
        responses = await asyncio.gather(
            *[client.post(url, content=body, headers=headers) for body in bodies]
        )
    statuses = [r.status_code for r in responses]
    return [statuses.pop(position), *statuses]


def test_poisoned_batches_over_http(trained_flights: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    store = str(trained_flights["root"] / "models")
    bad = {**rows[0], "carrier": "\ud800"}
    with running_server(store, max_batch_size=64, max_wait_ms=5) as (url, _app):
        for trial in range(20):
            bad_status, *good = asyncio.run(_round(f"{url}/v1/models/flights:predict", rows, bad, trial))
            assert bad_status in (400, 422)  # refused at parsing or by the engine: never 500
            assert good == [200] * len(rows), f"trial {trial}: {good}"
