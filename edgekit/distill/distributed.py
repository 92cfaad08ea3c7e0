"""Devices and data parallelism for training: torch.distributed as launched by ``torchrun`` (or SLURM's ``srun torchrun``).

edgekit brings no launcher of its own: when ``torchrun`` has set ``WORLD_SIZE`` > 1, training joins
the process group it describes (``env://``; gloo on CPU, nccl on GPUs) and wraps the student in
DistributedDataParallel. The group is created with a short timeout so that a rank that cannot reach
the others fails in seconds with one line, then a second group with a long timeout carries the
training's collectives (a slow validation or checkpoint on rank 0 must not time the others out).
"""
from __future__ import annotations

import atexit
import dataclasses
import datetime
import os
from typing import Any

from edgekit.errors import EdgekitError, first_line

DEVICES = ("auto", "cpu", "cuda", "mps")
INIT_TIMEOUT_ENV = "EDGEKIT_DIST_INIT_TIMEOUT"  # seconds to reach the other ranks (default 60)
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` 0 of ``size`` 1 when not launched by torchrun."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    group: Any = None  # the long-timeout process group (None when single-process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def env_world_size() -> int:
    """The world size torchrun (or the user) announced, before any group exists."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError as exc:
        raise EdgekitError(f"WORLD_SIZE: {os.environ['WORLD_SIZE']!r} is not an integer") from exc


def is_main_process() -> bool:
    """True on rank 0 (and when not distributed): only it writes checkpoints, artifacts and manifests."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def resolve_device(name: str | None) -> Any:
    """``auto`` picks cuda, then mps, then cpu; asking for one that is not there is a one-line error."""
    import torch

    name = name or "auto"
    if name not in DEVICES:
        raise EdgekitError(f"--device: {name!r} is not one of {', '.join(DEVICES)}")
    has_mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise EdgekitError("--device cuda: no CUDA GPU is available to this torch "
                               f"({torch.__version__}); use --device cpu or auto")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise EdgekitError(f"--device cuda: LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) "
                               "on this node (--nproc-per-node must not exceed the GPUs)")
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    if name == "mps" and not has_mps:
        raise EdgekitError("--device mps: Apple's Metal backend is not available here; use --device cpu or auto")
    return torch.device(name)


def join(device: Any) -> World:
    """Join torchrun's process group (once per process); a single process gets ``World()``."""
    import torch.distributed as dist

    size = env_world_size()
    if size == 1:
        return World()
    if not dist.is_available():
        raise EdgekitError("WORLD_SIZE > 1 but this torch was built without torch.distributed")
    if not dist.is_initialized():
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise EdgekitError(f"WORLD_SIZE={size} but {', '.join(missing)} not set: launch with torchrun")
        timeout = _init_timeout()
        backend = "nccl" if device.type == "cuda" else "gloo"
        where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        try:
            dist.init_process_group(backend, init_method="env://", timeout=timeout,
                                    **({"device_id": device} if device.type == "cuda" else {}))
            group = dist.new_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
            dist.barrier(group=group)
        except EdgekitError:
            raise
        except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, DistStoreError, ValueError...
            raise EdgekitError(f"rank {os.environ['RANK']} of {size}: cannot reach the other ranks at {where} within "
                               f"{timeout.total_seconds():.0f} s ({first_line(exc, 160)}); "
                               f"check MASTER_ADDR/MASTER_PORT and the network, or raise {INIT_TIMEOUT_ENV}") from exc
        atexit.register(_leave)
        _GROUPS["train"] = group
    return World(rank=dist.get_rank(), size=dist.get_world_size(),
                 local_rank=int(os.environ.get("LOCAL_RANK", "0")), group=_GROUPS.get("train"))


_GROUPS: dict[str, Any] = {}


def _init_timeout() -> datetime.timedelta:
    text = os.environ.get(INIT_TIMEOUT_ENV, "60")
    try:
        seconds = float(text)
    except ValueError as exc:
        raise EdgekitError(f"{INIT_TIMEOUT_ENV}: {text!r} is not a number of seconds") from exc
    return datetime.timedelta(seconds=max(1.0, seconds))


def _leave() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: Any, world: World, device: Any) -> Any:
    """DistributedDataParallel around ``model`` when distributed (it broadcasts rank 0's weights), else ``model``."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, process_group=world.group)


def broadcast_object(obj: Any, world: World) -> Any:
    """Rank 0's ``obj`` on every rank (resume state: every rank continues from rank 0's checkpoint)."""
    if not world.distributed:
        return obj
    import torch.distributed as dist

    box = [obj if world.is_main else None]
    dist.broadcast_object_list(box, src=0, group=world.group)
    return box[0]


def all_sum(values: list[float], world: World, device: Any) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (losses, correct counts, images)."""
    if not world.distributed:
        return values
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, group=world.group)
    return tensor.tolist()


def barrier(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.barrier(group=world.group)


def sync_buffers(model: Any, world: World) -> None:
    """Rank 0's buffers (batch-norm statistics) on every rank, so sharded validation scores one model."""
    if not world.distributed:
        return
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0, group=world.group)
