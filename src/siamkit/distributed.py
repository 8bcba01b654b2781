"""Data-parallel training on several processes (``torchrun``): the process group, who is rank 0,
the batch shards, the all-gather that lets a loss see every rank's embeddings, and the DDP wrapper.

Under ``torchrun --nproc-per-node N -m siamkit train RECIPE.yaml`` every process builds the same
network (same seed), draws the same *global* batch of ``N * batch_size`` items and keeps its own
contiguous slice of it (:func:`shard_bounds`); the network's encoder is wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`, and before the loss the embeddings (and
labels) of every rank are gathered in rank order (:func:`gather_batch`), so a pair, triplet or
mining loss computes exactly what one process with batch ``N * batch_size`` computes, and its
gradient reaches every rank's share. Rank 0 alone validates, prints progress, writes checkpoints
and the model folder.

Nothing here does anything in a single process: :func:`init_from_env` starts a process group only
when torchrun's variables (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...) are set, and every other
function is the identity (or a no-op) when no group is running.

>>> world_size(), rank(), is_main()
(1, 0, True)
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from siamkit.errors import ConfigError, SiamkitError

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TIMEOUT_VARIABLE = "SIAMKIT_DIST_TIMEOUT"
"""Seconds a rank waits for the others in one collective before failing (default 1800)."""


class DistributedError(SiamkitError, RuntimeError):
    """A rank failed, was killed or stopped answering: the other ranks stop with this error
    instead of waiting for ever."""


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process is rank 0: the one that logs, validates and writes files."""
    return rank() == 0


def launched_by_torchrun(environ: dict[str, str] | None = None) -> bool:
    """Whether the environment holds torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR/PORT)."""
    environ = os.environ if environ is None else environ
    return all(name in environ for name in TORCHRUN_VARIABLES)


def backend_for(device: str | torch.device) -> str:
    """NCCL when training on CUDA (and NCCL is built in), gloo otherwise (CPU)."""
    cuda = torch.device(device).type == "cuda" if str(device) != "auto" else None
    if cuda is None:
        cuda = torch.cuda.is_available()
    return "nccl" if cuda and dist.is_nccl_available() else "gloo"


def timeout() -> datetime.timedelta:
    """How long a collective may wait: ``$SIAMKIT_DIST_TIMEOUT`` seconds, default 30 minutes."""
    text = os.environ.get(TIMEOUT_VARIABLE, "1800")
    try:
        seconds = float(text)
    except ValueError:
        raise ConfigError(f"{TIMEOUT_VARIABLE}={text!r}: expected a number of seconds") from None
    if seconds <= 0:
        raise ConfigError(f"{TIMEOUT_VARIABLE}={text!r}: expected a positive number of seconds")
    return datetime.timedelta(seconds=seconds)


def init_from_env(device: str = "auto") -> bool:
    """Start the process group from torchrun's environment variables, if they are set and no group
    runs yet; return whether a group runs now. The backend follows ``device`` (the recipe's
    ``training.device``): NCCL for CUDA, each process on GPU ``LOCAL_RANK``; gloo for CPU."""
    if dist.is_initialized():
        return True
    if not launched_by_torchrun():
        return False
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=timeout())
    return True


def teardown() -> None:
    """Destroy the process group started by :func:`init_from_env` (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def session(device: str = "auto") -> Iterator[bool]:
    """``with session(device) as distributed:``: :func:`init_from_env`, then :func:`teardown`."""
    started = not dist.is_initialized() and init_from_env(device)
    try:
        yield is_distributed()
    finally:
        if started:
            teardown()


def barrier() -> None:
    """Wait until every rank gets here (no-op in one process)."""
    if is_distributed():
        dist.barrier()


# --- sharding ---------------------------------------------------------------------------------


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The slice ``[start, stop)`` of a global batch of ``n`` items that rank ``rank`` keeps:
    contiguous, in rank order, sizes differing by at most one (like ``torch.tensor_split``), so
    the shards of all ranks put end to end are the global batch, each item exactly once."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} of world size {world_size}: expected 0 <= rank < size")
    q, r = divmod(n, world_size)
    start = rank * q + min(rank, r)
    return start, start + q + (rank < r)


def shard_batches(batches: Any) -> Any:
    """Make the batch source draw global batches of ``world_size * batch_size`` and yield this
    rank's shard (its ``set_shard(rank, world_size)``); unchanged in one process."""
    if not is_distributed():
        return batches
    set_shard = getattr(batches, "set_shard", None)
    if set_shard is None:
        raise ConfigError(
            f"{type(batches).__name__} cannot be split across {world_size()} processes "
            "(it has no set_shard(rank, world_size))"
        )
    set_shard(rank(), world_size())
    return batches


# --- gathering --------------------------------------------------------------------------------


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 in rank order (shards may differ in size); the backward pass sums
    the gradient over ranks and returns this rank's part of it."""

    @staticmethod
    def forward(ctx, x: Tensor, sizes: list[int]) -> Tensor:  # noqa: D102
        ctx.sizes, ctx.rank = sizes, dist.get_rank()
        padded = x.new_zeros((max(sizes), *x.shape[1:]))
        padded[: len(x)] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        # Every rank computed the loss of the whole batch, so each one holds a gradient for every
        # shard; their sum, times DDP's 1/N average of the encoder's gradients, is the gradient
        # one process with the whole batch gets.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def gather_batch(*tensors: Tensor) -> tuple[Tensor, ...]:
    """The tensors (same first dimension: one batch shard) of every rank, concatenated in rank
    order: the global batch. Gradients flow back to each rank's own shard. Identity in one
    process."""
    if not is_distributed():
        return tensors
    n = torch.tensor([len(tensors[0])], dtype=torch.long, device=tensors[0].device)
    counts = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(counts, n)
    sizes = [int(c) for c in counts]
    return tuple(_GatherWithGrad.apply(t, sizes) for t in tensors)


def average_gradients(parameters: Iterable[Tensor]) -> None:
    """Average the gradients of ``parameters`` over ranks (those DDP does not synchronise: a
    learned head, a loss's class proxies). No-op in one process."""
    if not is_distributed():
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world_size())


def from_main(value: Any) -> Any:
    """Rank 0's ``value`` (JSON-able: numbers, strings, lists, dicts) on every rank, sent as JSON
    bytes (nothing is unpickled). Returns ``value`` unchanged in one process."""
    if not is_distributed():
        return value
    device = _collective_device()
    payload = json.dumps(value).encode() if is_main() else b""
    length = torch.tensor([len(payload)], dtype=torch.long, device=device)
    dist.broadcast(length, 0)
    data = torch.zeros(int(length), dtype=torch.uint8, device=device)
    if is_main():
        data.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
    dist.broadcast(data, 0)
    return json.loads(bytes(data.cpu().tolist()).decode())


def _collective_device() -> torch.device:
    return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient is summed over ranks too (each rank's loss is the whole
    batch's, see :class:`_GatherWithGrad`)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        x = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


# --- the model --------------------------------------------------------------------------------


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalisation over the global batch on any device (torch's own
    :class:`~torch.nn.SyncBatchNorm` runs on GPUs only): in training the per-channel sums of
    every rank's share are added up, so the statistics, the running averages and the gradients
    are those of one process with the whole batch. Same tensors (and state_dict keys) as the
    BatchNorm it replaces; in eval mode or one process it is that BatchNorm."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected an input of 2 or more dimensions, got {x.dim()}")

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        local = torch.cat(
            [xf.sum(dims), (xf * xf).sum(dims), xf.new_tensor([xf.numel() / x.shape[1]])]
        )
        total = _AllReduceSum.apply(local)
        c, n = x.shape[1], total[-1]
        mean = total[:c] / n
        var = (total[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            self._update_running(mean.detach(), var.detach() * n / (n - 1).clamp_min(1))
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: Tensor, unbiased_var: Tensor) -> None:
        self.num_batches_tracked.add_(1)
        m = self.momentum
        if m is None:  # cumulative moving average, as in torch's BatchNorm
            m = 1.0 / float(self.num_batches_tracked)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), m)

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """``module`` with every BatchNorm1d/2d/3d replaced by this class, sharing its
        parameters and buffers (so an optimiser built before keeps working)."""
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, cls):
            sync = cls(module.num_features, module.eps, module.momentum, module.affine,
                       module.track_running_stats)  # fmt: skip
            sync.weight, sync.bias = module.weight, module.bias
            sync.running_mean, sync.running_var = module.running_mean, module.running_var
            sync.num_batches_tracked = module.num_batches_tracked
            sync.train(module.training)
            return sync
        for name, child in module.named_children():
            module._modules[name] = cls.convert(child)
        return module


class Embedder(nn.Module):
    """Embeds one or more batches with a network in one ``forward`` (what DDP hooks): two or
    three batches through ``network(*inputs)``, one through ``network.embed``. Only the encoder
    is registered as a submodule, so DDP synchronises the encoder's gradients and buffers; the
    other trainable tensors (a learned head, a loss's proxies) go through
    :func:`average_gradients`."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.encoder = network.encoder
        object.__setattr__(self, "network", network)  # not a submodule: see the docstring

    def forward(self, *inputs: Any) -> tuple[Tensor, ...]:  # noqa: D102
        if len(inputs) == 1:
            return (self.network.embed(inputs[0]),)
        return tuple(self.network(*inputs))


def wrap(
    network: nn.Module, device: torch.device, sync_batchnorm: bool = True
) -> Callable[..., tuple[Tensor, ...]]:
    """The network's :class:`Embedder`, inside DistributedDataParallel when a group runs; with
    ``sync_batchnorm`` the encoder's BatchNorm layers normalise over the global batch first
    (:class:`SyncBatchNorm`, replaced in place)."""
    if is_distributed() and sync_batchnorm:
        SyncBatchNorm.convert(network.encoder)
    embedder = Embedder(network)
    if not is_distributed():
        return embedder
    ids = [device.index or 0] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(embedder, device_ids=ids, static_graph=True)


def unsynchronised(parameters: Sequence[Tensor], network: nn.Module) -> list[Tensor]:
    """The trainable ``parameters`` outside ``network.encoder`` (DDP synchronises the encoder's)."""
    encoder = {id(p) for p in network.encoder.parameters()}
    return [p for p in parameters if p.requires_grad and id(p) not in encoder]


# --- failures ---------------------------------------------------------------------------------


def is_collective_failure(error: BaseException) -> bool:
    """Whether ``error`` comes from a collective that lost a peer or timed out."""
    if isinstance(error, dist.DistError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(
        word in text for word in ("gloo", "nccl", "connection", "timed out", "timeout")
    )


def raise_peer_failure(error: BaseException) -> None:
    """Raise a one-line :class:`DistributedError` from ``error`` if it is a collective's failure
    (a peer died, was killed, or did not answer within ``$SIAMKIT_DIST_TIMEOUT`` seconds) in a
    process group; otherwise return (the caller re-raises ``error``)."""
    if not is_distributed() or isinstance(error, SiamkitError) or not is_collective_failure(error):
        return
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    raise DistributedError(
        f"rank {rank()} of {world_size()}: another process failed, was killed or did not answer "
        f"within {timeout().total_seconds():g} s (${TIMEOUT_VARIABLE}); this one stops too, "
        f"resume with --resume ({first[:160]})"
    ) from error


@contextmanager
def peers_failures() -> Iterator[None]:
    """``with peers_failures():`` turns a collective's failure into a :class:`DistributedError`
    (see :func:`raise_peer_failure`)."""
    try:
        yield
    except RuntimeError as error:
        raise_peer_failure(error)
        raise


# --- local launcher (tests, benchmarks) -------------------------------------------------------


def free_port() -> int:
    """A TCP port free on this machine right now (for ``MASTER_PORT``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_worker(rank_: int, world: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update(
        RANK=str(rank_), LOCAL_RANK=str(rank_), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)
    with session("cpu"):
        fn(*args)


def run_local(
    fn: Callable, world: int, args: tuple = (), wait: float = 600.0, start_method: str = "spawn"
) -> list[int | None]:
    """Run ``fn(*args)`` in ``world`` processes on this machine, each inside a gloo process group
    (like ``torchrun --nproc-per-node world``, without the elastic agent: a failed process does
    not stop the others). Returns each process's exit code (``None``: still running after
    ``wait`` seconds, then killed). ``fn`` must be importable (a module-level function).
    ``start_method="fork"`` starts much faster (and passes ``args`` without pickling), but a
    forked process must keep to one thread: OpenMP can hang when a forked process starts more
    threads after the parent used it."""
    context = torch.multiprocessing.get_context(start_method)
    port = free_port()
    processes = [
        context.Process(target=_local_worker, args=(r, world, port, fn, args), daemon=False)
        for r in range(world)
    ]
    for p in processes:
        p.start()
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=wait)
    codes: list[int | None] = []
    for p in processes:
        p.join(max(0.0, (deadline - datetime.datetime.now()).total_seconds()))
        if p.exitcode is None:
            p.kill()
            p.join()
            codes.append(None)
        else:
            codes.append(p.exitcode)
    return codes
