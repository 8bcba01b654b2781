"""Micro-batching: concurrent requests share a forward pass; a full queue answers 503 at once.

The model thread is held on an event so that requests pile up deterministically (no timing)."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
import torch

from siamkit.serving import ServeSettings, create_app
from siamkit.serving.batcher import Batcher, Busy
from unit.test_serve import RW, png, tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("batching") / "model")


class Gate:
    """Wraps the server's batch function: records batch sizes; the first call waits for
    ``release`` (so later requests queue up behind it)."""

    def __init__(self, run) -> None:
        self.run, self.sizes = run, []
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, items):
        self.sizes.append(len(items))
        self.entered.set()
        assert self.release.wait(60), "the test never released the model"
        return self.run(items)


async def started(app, gate_holder: list) -> None:
    server = app.state.server
    for _ in range(1200):
        if server.ready:
            break
        await asyncio.sleep(0.05)
    assert server.ready, server.failure
    gate = Gate(server.batcher.run)
    server.batcher.run = gate
    gate_holder.append(gate)


def verify_call(client: httpx.AsyncClient, seed: int):
    files = {"a": ("a.png", png(seed)), "b": ("b.png", png(seed + 1))}
    return client.post("/v1/verify", files=files, headers={"Authorization": f"Bearer {RW}"})


async def run_scenario(model_dir, settings: ServeSettings, queued: int):
    """One request holds the model; ``queued`` more arrive; then the model is released."""
    app = create_app(model_dir, None, settings.with_keys(rw=[RW]))
    holder: list[Gate] = []
    async with app.router.lifespan_context(app):
        await started(app, holder)
        gate = holder[0]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = asyncio.create_task(verify_call(client, 0))
            while not gate.entered.is_set():
                await asyncio.sleep(0.01)
            later = [asyncio.create_task(verify_call(client, i)) for i in range(1, queued + 1)]
            server = app.state.server
            # without batching, the batcher's depth also counts the request held in the model
            held = 0 if settings.batching else 1
            for _ in range(1000):  # until every later request waits for the model or got refused
                if server.batcher.depth - held + sum(t.done() for t in later) >= queued:
                    break
                await asyncio.sleep(0.01)
            rejected = [t.result() for t in later if t.done()]
            gate.release.set()
            answers = [await first] + [await t for t in later]
            metrics = (await client.get("/metrics")).text
    return gate.sizes, answers, rejected, metrics


def test_concurrent_requests_share_one_forward_pass(model_dir):
    settings = ServeSettings(max_wait_ms=50, max_batch=64)
    sizes, answers, rejected, metrics = asyncio.run(run_scenario(model_dir, settings, 6))
    assert [a.status_code for a in answers] == [200] * 7 and not rejected
    assert sizes == [2, 12]  # the first pair alone, then the six waiting pairs together
    assert "siamkit_batch_size_count 2.0" in metrics and "siamkit_batch_size_sum 14.0" in metrics


def test_full_queue_is_503_with_retry_after(model_dir):
    settings = ServeSettings(queue_size=2, max_batch=2, max_wait_ms=0)
    sizes, answers, rejected, metrics = asyncio.run(run_scenario(model_dir, settings, 5))
    assert len(rejected) == 3
    for answer in rejected:
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
        assert "busy" in answer.json()["detail"]
    assert sorted(a.status_code for a in answers) == [200] * 3 + [503] * 3
    assert 'status="503"' in metrics


def test_without_batching_each_request_runs_alone_and_is_still_bounded(model_dir):
    settings = ServeSettings(batching=False, queue_size=3)
    sizes, answers, rejected, _ = asyncio.run(run_scenario(model_dir, settings, 4))
    assert sizes == [2, 2, 2]  # three admitted, one pass each
    assert [a.status_code for a in rejected] == [503, 503]


def test_batcher_hands_each_request_its_own_rows():
    async def scenario():
        batcher = Batcher(lambda items: torch.tensor(items, dtype=torch.float32)[:, None],
                          max_batch=8, max_wait_ms=20)  # fmt: skip
        batcher.start()
        outs = await asyncio.gather(*(batcher.embed([i, i + 0.5]) for i in range(5)))
        await batcher.stop()
        return outs

    for i, out in enumerate(asyncio.run(scenario())):
        assert out[:, 0].tolist() == [i, i + 0.5]


def test_a_failing_batch_fails_its_requests_not_the_batcher():
    calls = []

    def run(items):
        calls.append(items)
        if "bad" in items:
            raise ValueError("broken input")
        return torch.zeros(len(items), 1)

    async def scenario():
        batcher = Batcher(run, max_batch=1, max_wait_ms=0)
        batcher.start()
        with pytest.raises(ValueError, match="broken input"):
            await batcher.embed(["bad"])
        ok = await batcher.embed(["fine"])
        await batcher.stop()
        return ok

    assert asyncio.run(scenario()).shape == (1, 1) and calls == [["bad"], ["fine"]]


def test_busy_is_raised_not_queued():
    async def scenario():
        batcher = Batcher(lambda items: torch.zeros(len(items), 1), queue_size=1)
        batcher._queue = asyncio.Queue(1)  # no drain task: the queue only fills
        waiting = asyncio.ensure_future(batcher.embed([1]))
        await asyncio.sleep(0)
        with pytest.raises(Busy):
            await batcher.embed([2])
        waiting.cancel()

    asyncio.run(scenario())
