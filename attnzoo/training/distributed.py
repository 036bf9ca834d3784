"""Training on several processes: DistributedDataParallel under ``torchrun``.

    torchrun --nproc_per_node=2 -m attnzoo train g2p ...                  # one machine, 2 processes
    torchrun --nnodes=2 --node_rank=R --master_addr=HOST --master_port=29500 \\
             --nproc_per_node=8 -m attnzoo train translate ...            # two machines (run on each)

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in each process;
:func:`setup` reads them, joins the process group (gloo on CPU, NCCL on CUDA,
where process ``LOCAL_RANK`` takes GPU ``LOCAL_RANK``) and makes only rank 0
log, show the progress bar and write files. Without those variables
everything runs as one process and nothing here costs anything.

How the work is split (a distributed sampler over the task's own batches):
every process draws the same global batches in the same seeded order (as a
single process would), and process ``r`` of ``N`` trains on the ``r``-th of
``N`` nearly equal parts of each (:func:`shard`). DistributedDataParallel
averages the gradients, so a step on N processes is a step on the global batch
(``--batch-size`` is the global batch, as in one process), and the learning-rate
schedule, the checkpoints and ``--resume`` are those of a single process.

Decisions that depend on the clock or on signals (the budget is spent, Ctrl-C
or SIGTERM arrived, an evaluation or a checkpoint is due) are combined over all
processes after every step (:func:`agree`: any process's "yes" counts), so
every process stops, evaluates and saves at the same step. Rank 0 evaluates and
saves; the others wait for it at the next step, and leave once training ends
(:class:`WorkerFinished`) while rank 0 tests the model and writes the report.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distributed:
    rank: int = 0  # this process among all (0 logs, evaluates and writes files)
    world_size: int = 1  # processes in all
    local_rank: int = 0  # this process on its machine (its GPU index)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_current = Distributed()


class WorkerFinished(Exception):
    """Raised on ranks other than 0 once training ends: rank 0 alone evaluates, tests and reports."""


def from_env() -> Distributed:
    """The process's place as ``torchrun`` describes it (one process without its variables)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them): {e}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE")
    return Distributed(rank, world, local)


def current() -> Distributed:
    """This process's place (set by :func:`setup`; one process before it runs)."""
    return _current


def setup(device: str = "auto") -> Distributed:
    """Join the process group if ``torchrun`` started this process; returns its place.

    ``device``: the task's --device; "cuda" (or "auto" with a GPU) uses NCCL and
    GPU ``LOCAL_RANK``, otherwise gloo."""
    global _current
    place = from_env()
    if not place.enabled:
        _current = place
        return place
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ValueError("--device cuda under torchrun, but torch.cuda.is_available() is False; use --device cpu")
        if place.local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {place.local_rank} but this machine has {torch.cuda.device_count()} "
                             "GPU(s): lower --nproc_per_node to the GPU count")
        torch.cuda.set_device(place.local_rank)
    if not dist.is_initialized():
        # long timeout: the other ranks wait at the next step while rank 0 evaluates
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=2))
    _current = place
    if not place.is_main:  # one voice: the other ranks only warn
        logging.getLogger("attnzoo").setLevel(logging.WARNING)
    log.info("distributed: %d processes (%s)", place.world_size, dist.get_backend())
    return place


def teardown() -> None:
    global _current
    if dist.is_initialized():
        dist.destroy_process_group()
    _current = Distributed()


def device_for(name: str) -> torch.device:
    """The device of this process: under torchrun, CUDA means GPU ``LOCAL_RANK``."""
    if name == "cuda" and _current.enabled:
        return torch.device("cuda", _current.local_rank)
    return torch.device(name)


# ----------------------------------------------------------------------------- the work of one step
def shard(batch, place: Distributed | None = None):
    """This process's part of a global batch: the ``rank``-th of ``world_size`` nearly equal slices along
    dimension 0 of every tensor (and list) in it, whether the batch is a tensor, a tuple/list or a dataclass."""
    place = place or _current
    if not place.enabled:
        return batch
    size = batch_size(batch)
    lo = size * place.rank // place.world_size
    hi = size * (place.rank + 1) // place.world_size
    return _slice(batch, lo, hi)


def batch_size(batch) -> int:
    """The number of examples in a batch: dimension 0 of its first tensor."""
    size = _first_size(batch)
    if size is None:
        raise TypeError(f"cannot split a batch of type {type(batch).__name__} over processes: give tensors, "
                        "tuples/lists of them or a dataclass of them")
    return size


def _first_size(batch) -> int | None:
    if isinstance(batch, Tensor):
        return batch.shape[0] if batch.dim() else None
    if isinstance(batch, (tuple, list)) and batch:
        return _first_size(batch[0])
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        for f in dataclasses.fields(batch):
            size = _first_size(getattr(batch, f.name))
            if size is not None:
                return size
    return None


def _slice(x, lo: int, hi: int):
    if isinstance(x, Tensor):
        return x[lo:hi]
    if isinstance(x, tuple):
        return tuple(_slice(v, lo, hi) for v in x)
    if isinstance(x, list):
        return x[lo:hi]
    if dataclasses.is_dataclass(x):
        return dataclasses.replace(x, **{f.name: _slice(getattr(x, f.name), lo, hi)
                                         for f in dataclasses.fields(x) if f.init})
    return x  # numbers, strings: shared by every part


class LossModule(nn.Module):
    """``loss_fn(model, batch)`` as a module's forward, so DistributedDataParallel sees the whole step
    (tasks call ``model.loss(...)``, a method DDP would not see)."""

    def __init__(self, model: nn.Module, loss_fn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


def wrap(model: nn.Module, loss_fn):
    """``loss_fn`` running through DistributedDataParallel when several processes train, else unchanged.

    DDP broadcasts rank 0's weights at once, so every process starts from the same model."""
    if not _current.enabled:
        return loss_fn
    device = next(model.parameters()).device
    ddp = nn.parallel.DistributedDataParallel(LossModule(model, loss_fn),
                                              device_ids=[device.index] if device.type == "cuda" else None)
    return lambda _model, batch: ddp(batch)


def agree(*flags: bool) -> list[bool]:
    """Each flag, true on every process if it is true on any (one tiny all-reduce)."""
    if not _current.enabled:
        return list(flags)
    device = torch.device("cuda", _current.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([int(f) for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def mean_over_processes(*values: float) -> list[float]:
    """Each value averaged over the processes (training losses of their parts of the batch)."""
    if not _current.enabled:
        return list(values)
    device = torch.device("cuda", _current.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / _current.world_size).tolist()
