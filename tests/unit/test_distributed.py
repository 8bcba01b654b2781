"""Data-parallel training: 2 gloo processes with batch B reach the weights of 1 process with batch
2B, a dead rank stops the other with a clear error, and batch shards tile the global batch.

The multi-process tests fork 2 workers (``siamkit.distributed.run_local``) that train a small MLP
for a few steps on synthetic vectors; the single-process reference trains in the test process.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from siamkit import distributed
from siamkit.checkpoint import load_tensors, save_tensors
from siamkit.data.batches import ClassBatches, PairBatches, TripletBatches
from siamkit.data.labelled import LabelledData
from siamkit.data.text import TextPairBatches, TextPairs
from siamkit.encoders.conv import Conv4
from siamkit.encoders.vector import MLPEncoder
from siamkit.heads import EuclideanHead
from siamkit.losses import ContrastiveLoss, MinedTripletLoss
from siamkit.siamese import SiameseNetwork
from siamkit.training import TrainConfig, fit

B = 8  # items (pairs, or class-balanced items) per process and step
STEPS = 3  # global steps per epoch
# Float tolerance on the weights after 2 epochs x 3 SGD steps: the two runs add the same terms in
# another order (the gradient is the mean of 2 shard means, all-reduced, instead of one mean over
# 16 items; a batch of 8 takes other matmul kernels than one of 16), which moves float32 results by
# ~1e-7 relative per step. Measured: max |diff| 1.5e-8 (pairs), 1.2e-7 (mined, conv + BatchNorm).
# Broken variants differ by far more: a rank training on its shard alone (no all-gather of
# embeddings), or BatchNorm statistics per rank (sync_batchnorm off: 0.10, see
# test_broken_variants_differ). SGD, not Adam: the last bias of a Euclidean twin network cancels
# in e1 - e2, so its gradient is 0 in exact arithmetic and +-1e-9 float noise in either run, and
# Adam turns any nonzero gradient into a step of ~lr (measured: that bias alone differed by 7.7e-3
# = 0.77 lr with Adam, every other weight by <= 3e-8).
TOLERANCE = 1e-5


def synthetic() -> LabelledData:
    """12 classes x 8 vectors of dim 16 around random centres."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(12, 16, generator=gen) * 2
    labels = torch.arange(12).repeat_interleave(8)
    return LabelledData(centres[labels] + torch.randn(96, 16, generator=gen), labels)


def twin_mlp() -> SiameseNetwork:
    """The small twin network every pair run starts from (seeded)."""
    torch.manual_seed(0)
    return SiameseNetwork(MLPEncoder(16, (32,), 8), EuclideanHead())


def twin_conv() -> SiameseNetwork:
    """A twin Conv-4 block with BatchNorm on 4x4 images (seeded): mined runs check that batch
    statistics are taken over the global batch too."""
    torch.manual_seed(0)
    return SiameseNetwork(Conv4(1, 4, channels=4, blocks=1, embedding_dim=8), EuclideanHead())


def train(
    kind: str, batch_size: int, out: Path, epochs: int = 2, resume: bool = False, sync: bool = True
) -> dict:
    """Train a small twin network with a pair loss (MLP) or batch-hard mining (conv + BatchNorm);
    return its weights."""
    data = synthetic()
    if kind == "pairs":
        network, loss = twin_mlp(), ContrastiveLoss(margin=2.0)
        batches = PairBatches(data, pairs_per_epoch=STEPS * 2 * B, batch_size=batch_size)
    else:
        network, loss = twin_conv(), MinedTripletLoss(margin=0.2, mining="batch_hard")
        images = LabelledData(data.items.view(-1, 1, 4, 4), data.labels)
        batches = ClassBatches(images, batch_size, m_per_class=2, batches_per_epoch=STEPS)
    config = TrainConfig(
        epochs=epochs,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        seed=0,
        device="cpu",
        threads=1,
        sync_batchnorm=sync,
    )
    fit(network, loss, batches, config, out, resume=resume, show_progress=False)
    return network.state_dict()


def _ddp_worker(folder: str) -> None:
    """Each kind: 1 epoch, then a resumed second epoch (every rank reads rank 0's checkpoint)."""
    for kind in ("pairs", "mined"):
        out = Path(folder) / kind
        train(kind, B, out, epochs=1)
        weights = train(kind, B, out, epochs=2, resume=True)
        if distributed.is_main():
            save_tensors(Path(folder) / f"{kind}.safetensors", weights)
    unsynced = train("mined", B, Path(folder) / "unsynced", sync=False)
    if distributed.is_main():
        save_tensors(Path(folder) / "unsynced.safetensors", unsynced)


class _DiesOnRankOne:
    """A batch source whose rank 1 process dies (like a kill -9) at its second batch."""

    def __init__(self, inner: PairBatches) -> None:
        self.inner = inner

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def set_shard(self, rank: int, world_size: int) -> None:
        self.inner.set_shard(rank, world_size)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        for step, batch in enumerate(self.inner):
            if step == 1 and distributed.rank() == 1:
                os._exit(3)
            yield batch


def _dying_worker(folder: str) -> None:
    network = twin_mlp()
    batches = _DiesOnRankOne(PairBatches(synthetic(), pairs_per_epoch=4 * 2 * B, batch_size=B))
    config = TrainConfig(epochs=1, lr=0.01, seed=0, device="cpu", threads=1)
    try:
        fit(network, ContrastiveLoss(), batches, config, folder, show_progress=False)
    except distributed.DistributedError as error:
        Path(folder, f"error-{distributed.rank()}.txt").write_text(str(error))
        raise


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ddp")
    codes = distributed.run_local(_ddp_worker, 2, (str(folder),), wait=300, start_method="fork")
    assert codes == [0, 0], f"worker exit codes {codes}"
    return folder


@pytest.mark.parametrize("kind", ["pairs", "mined"])
def test_two_processes_match_one_with_the_global_batch(ddp_run, tmp_path, kind):
    reference = train(kind, 2 * B, tmp_path)
    ddp = load_tensors(ddp_run / f"{kind}.safetensors")
    assert set(ddp) == set(reference)
    diff = max(float((ddp[k] - reference[k]).abs().max()) for k in reference)
    assert diff <= TOLERANCE, f"{kind}: max |weight difference| {diff:.3g}"
    start = (twin_mlp() if kind == "pairs" else twin_conv()).state_dict()
    assert max(float((reference[k] - start[k]).abs().max()) for k in start) > 100 * TOLERANCE


def test_broken_variants_differ(ddp_run, tmp_path):
    """The tolerance separates: one process with batch B (what a rank computes without gathering
    the others' embeddings), and 2 processes with per-rank BatchNorm statistics, end far from the
    global-batch run, so the equivalence test can fail."""
    reference = train("mined", 2 * B, tmp_path)
    for broken in (
        train("mined", B, tmp_path / "alone"),
        load_tensors(ddp_run / "unsynced.safetensors"),
    ):
        assert (
            max(float((broken[k] - reference[k]).abs().max()) for k in reference) > 100 * TOLERANCE
        )


def test_a_dead_rank_stops_the_other_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, "30")  # a hung peer fails within 30 s
    codes = distributed.run_local(_dying_worker, 2, (str(tmp_path),), wait=120, start_method="fork")
    assert codes[1] == 3  # the killed rank
    assert codes[0] not in (0, None)  # rank 0 failed instead of finishing or hanging
    message = (tmp_path / "error-0.txt").read_text()
    assert "rank 0 of 2: another process failed" in message and "--resume" in message


def _items(batch) -> list[float]:
    """The item ids of a batch (each item's first feature is its index)."""
    first = batch[0]
    return first[:, 0].tolist() if isinstance(first, torch.Tensor) else list(first)


def _sources(batch_size: int) -> list:
    n = 60
    items = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 4)
    labels = torch.arange(n) // 5
    data = LabelledData(items, labels, groups=labels // 4)
    texts = TextPairs([str(i) for i in range(n)], [f"b{i}" for i in range(n)], torch.zeros(n))
    return [
        PairBatches(data, pairs_per_epoch=53, batch_size=batch_size, seed=1),
        TripletBatches(data, triplets_per_epoch=42, batch_size=batch_size, seed=2),
        ClassBatches(data, batch_size, m_per_class=2, seed=3, batches_per_epoch=4),
        ClassBatches(data, batch_size, 2, seed=4, batches_per_epoch=3, groups_per_batch=1),
        TextPairBatches([texts, texts.subset(range(7))], batch_size=batch_size, seed=5),
    ]


@pytest.mark.parametrize("world", [2, 3])
def test_shards_tile_the_global_batch(world):
    """Every batch kind: the shards of all ranks, end to end, are the batch one process with
    ``world * B`` draws (so no item is repeated or lost), and each shard has B or fewer."""
    per_rank = 4
    for index, source in enumerate(_sources(world * per_rank)):
        source.set_epoch(1)
        whole = [_items(b) for b in source]
        shards = []
        for rank in range(world):
            shard = _sources(per_rank)[index]
            shard.set_shard(rank, world)
            shard.set_epoch(1)
            assert len(shard) == len(source)
            shards.append([_items(b) for b in shard])
        assert len(whole) > 1 and all(len(s) == len(whole) for s in shards), type(source)
        for step, batch in enumerate(whole):
            parts = [s[step] for s in shards]
            assert sum(parts, []) == batch, f"{type(source).__name__} step {step}"
            assert all(0 < len(p) <= per_rank for p in parts)


@given(st.integers(0, 500), st.integers(1, 9))
def test_shard_bounds_partition(n, world):
    bounds = [distributed.shard_bounds(n, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    assert max(hi - lo for lo, hi in bounds) - min(hi - lo for lo, hi in bounds) <= 1


def test_single_process_is_untouched():
    assert not distributed.is_distributed() and distributed.is_main()
    assert not distributed.launched_by_torchrun({"RANK": "0"})
    x = torch.ones(3, 2)
    assert distributed.gather_batch(x)[0] is x
    assert distributed.from_main({"auc": 0.5}) == {"auc": 0.5}
