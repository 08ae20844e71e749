"""Several processes sharing one run of `diffews evaluate` or `diffews segment` (``accelerate launch``, ``torchrun``).

A launcher starts N copies of the command with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` in their environment. `launched_processes` reads them and
joins the copies in a gloo process group (torch's own; accelerate is not needed to run, only to
launch); without them it returns the one-process `Processes()` and touches nothing.

The work is split in whole batches (`Processes.shard`), so every batch a process runs is a batch a
one-process run would run, with the same inputs and shapes: outputs do not depend on the process
count. Results are merged exactly: integer counters are summed (`Processes.sum`), which no order of
addition can change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from .errors import InputError, first_line

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""What a launcher (accelerate launch, torchrun) sets for each process it starts."""
WAIT_FOR_PEERS = timedelta(hours=24)
"""How long a process waits for the others at a merge: the slowest shard may finish long after the
fastest. A process that dies closes its connections, so the others learn of it at once, not after this."""
WAIT_TO_JOIN = timedelta(minutes=30)
"""How long processes started without an elastic launcher (by hand, by srun) wait for each other to
start (torch's default process-group timeout): one that never starts (it failed first, or was never
launched) ends the run with an error after this, not after `WAIT_FOR_PEERS`. Under torchrun and
accelerate launch the launcher stops the others."""


class PeerFailed(InputError):
    """Another process of the run stopped (failed, interrupted or killed) before the merge."""


@dataclass(frozen=True)
class Processes:
    """This process's place among the processes of a run: ``rank`` in ``0..count-1``.

    The default, ``Processes()``, is a run of one process: every method is then a no-op.
    """

    rank: int = 0
    count: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process prints summaries and writes the shared report (rank 0)."""
        return self.rank == 0

    def __str__(self) -> str:
        return f"process {self.rank + 1} of {self.count}"

    def shard(self, total: int, batch_size: int = 1) -> range:
        """This process's share of items ``0..total-1``: a contiguous run of whole batches of
        `batch_size` (batches split as evenly as possible; the last, short batch goes to the last process)."""
        batches = -(-total // batch_size)
        first, last = self.rank * batches // self.count, (self.rank + 1) * batches // self.count
        return range(min(first * batch_size, total), min(last * batch_size, total))

    def sum(self, counts: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of `counts` (an integer tensor of the same shape in every process) over the processes; exact."""
        if counts.is_floating_point():
            raise TypeError("sum merges integer counts only: float sums depend on the order of addition")
        return self._all_reduce(counts, "SUM")

    def max(self, value: float) -> float:
        """The largest `value` of all processes (exact: no arithmetic)."""
        return float(self._all_reduce(torch.tensor([value], dtype=torch.float64), "MAX").item())

    def barrier(self) -> None:
        """Wait until every process gets here."""
        self._all_reduce(torch.zeros(1, dtype=torch.int64), "SUM")

    def _all_reduce(self, tensor: torch.Tensor, op: str) -> torch.Tensor:
        if self.count == 1:
            return tensor.clone()
        import torch.distributed as dist

        # NCCL reduces CUDA tensors only (a group set up by the caller, e.g. an Accelerator's); gloo, ours, CPU tensors
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        merged = tensor.detach().to(device, copy=True)
        try:
            dist.all_reduce(merged, op=getattr(dist.ReduceOp, op))
        except RuntimeError as error:  # a peer closed its connection: it failed or was stopped
            raise PeerFailed(f"{self}: another process of this run stopped ({first_line(error)})") from None
        return merged.cpu()


def _launch_number(name: str, low: int, high: int | None = None, default: int | None = None) -> int:
    """The launcher's integer variable `name`, checked to lie in ``low..high``; `InputError` naming it otherwise."""
    text = os.environ.get(name) or (str(default) if default is not None else "")
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        expected = f"{low}..{high}" if high is not None else f">= {low}"
        raise InputError(f"{name}={text!r}: expected an integer {expected}; start the run with accelerate launch or torchrun")
    return value


def launched_processes() -> Processes:
    """The processes of this run as a launcher set them up (joining their process group on first
    call), or ``Processes()`` when this process was not launched as one of several."""
    count = _launch_number("WORLD_SIZE", 1, default=1)
    if count <= 1:
        return Processes()
    missing = [name for name in LAUNCH_VARIABLES if not os.environ.get(name)]
    if missing:
        raise InputError(f"WORLD_SIZE={count} but the launcher did not set {', '.join(missing)}: start the run with accelerate launch or torchrun")
    rank, local_rank = _launch_number("RANK", 0, count - 1), _launch_number("LOCAL_RANK", 0)
    _launch_number("MASTER_PORT", 1, 65535)
    processes = Processes(rank, count, local_rank)
    import torch.distributed as dist

    if not dist.is_initialized():
        try:
            # what init_process_group does with env://, but rank 0 waits WAIT_TO_JOIN for the others to connect
            # (under torchrun every rank is a client of the launcher's store, and the launcher stops the rest)
            store, _, _ = next(dist.rendezvous("env://", processes.rank, count, timeout=WAIT_TO_JOIN))
            store.set_timeout(WAIT_FOR_PEERS)
            store = dist.PrefixStore("default_pg", store)
            dist.init_process_group("gloo", store=store, rank=processes.rank, world_size=count, timeout=WAIT_FOR_PEERS)
        except (RuntimeError, ValueError) as error:  # e.g. the address's port taken by another program
            address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
            raise InputError(f"{processes}: cannot join the run's processes at {address} ({first_line(error)})") from None
    if processes.local_rank < torch.cuda.device_count():  # "cuda" (kernels, generators) means this process's GPU
        torch.cuda.set_device(processes.local_rank)
    return processes
