"""Training and knowledge distillation: one loop for baselines, fine-tuning and pruned students.

Loss (Hinton et al.): ``alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE``.
Samples without labels (an unlabelled image folder) use pure distillation (alpha = 1), which lets
users recover a pruned model's accuracy from unlabelled images alone. Without a teacher it is plain
supervised training. Seeded, cosine schedule, evaluation every epoch, best checkpoint kept, and
resumable: a checkpoint is written after every epoch and picked up by the next run of the same
configuration (:mod:`edgekit.distill.checkpoint`).

Speed: any device (``auto`` picks cuda, mps, cpu), mixed precision (bf16, or fp16 with a
GradScaler), ``channels_last``, DataLoader workers with pinned memory, an optional teacher-logit
cache, and data parallelism when launched by ``torchrun`` (:mod:`edgekit.distill.distributed`).
``batch_size`` is the global batch: N processes take ``batch_size / N`` each, so the schedule and
the result do not depend on how many processes share the work.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.atomic import atomic_path
from edgekit.data import load_recipe
from edgekit.distill import checkpoint as ckpts
from edgekit.distill import distributed as dd
from edgekit.distill.data import TeacherCache, TorchData, as_dataset
from edgekit.distill.history import TrainHistory
from edgekit.distill.objectives import accuracy, distillation_loss, objective_for, to_device as _to
from edgekit.errors import EdgekitError
from edgekit.sources import copied_state, with_versions

_log = logging.getLogger(__name__)
_METRIC_NAMES = {"top1": "top-1", "map50_95": "mAP50-95", "miou": "mIoU"}

__all__ = ["TorchData", "TrainHistory", "accuracy", "distillation_loss", "fit", "train"]


def train(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`fit` with the history as a plain dict (``epochs``, ``best_val_top1``, the setup), for scripts."""
    return fit(*args, **kwargs).as_dict()


def fit(
    student: Any,
    train_source: Any,
    recipe: str | Any,
    *,
    teacher: Any | None = None,
    val_source: str | None = None,
    epochs: int = 5,
    lr: float = 3e-3,
    batch_size: int = 64,
    optimizer: str = "adamw",
    weight_decay: float = 5e-4,
    alpha: float = 0.7,
    temperature: float = 4.0,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = _log.info,
    device: str = "auto",
    amp: bool | None = None,
    amp_dtype: str | None = None,
    channels_last: bool | None = None,
    workers: int = 0,
    cache_teacher: bool = False,
    task: str = "classification",
) -> TrainHistory:
    """Train ``student`` in place (best validation weights kept, returned on the CPU); returns the history.

    ``train_source`` is a data source name (with ``recipe``) or a map-style Dataset of ``(x, y)``.
    ``amp``/``channels_last`` default to on for CUDA only; ``amp_dtype`` is ``bf16`` or ``fp16``
    (default: bf16 where the device supports it). ``task`` picks the loss and the validation
    score (:mod:`edgekit.distill.objectives`): top-1, mAP50-95 or mIoU.
    """
    import torch

    _check(epochs, optimizer, batch_size, workers)
    dev = dd.resolve_device(device)
    recipe = load_recipe(recipe) if recipe is not None else None
    train_data = as_dataset(train_source, recipe)
    objective = objective_for(task, getattr(train_data, "dataset", None))
    size = dd.env_world_size()
    if size > len(train_data):
        raise EdgekitError(f"{train_data.name}: {len(train_data)} training samples cannot be shared by "
                           f"{size} processes (WORLD_SIZE); use fewer processes or more data")
    world = dd.join(dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the recipe fixes the input size: pick the fastest kernels once
    say = log if world.is_main else (lambda _: None)
    precision = _precision(dev, amp, amp_dtype)
    use_cl = dev.type == "cuda" if channels_last is None else channels_last
    torch.manual_seed(seed)
    np.random.seed(seed)
    per_rank = max(1, batch_size // world.size)
    config = ckpts.fingerprint(
        train=train_data.name, train_size=len(train_data), val=val_source,
        recipe=recipe.as_dict() if recipe else None, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer,
        weight_decay=weight_decay, alpha=alpha, temperature=temperature, seed=seed,
        student=ckpts.shapes(student), teacher=ckpts.shapes(teacher), **({} if task == "classification" else {"task": task}))
    train_loader, sampler = _loader(train_data, per_rank, world, seed, workers, dev, train=True)
    val_data = as_dataset(val_source, recipe)
    val_objective = objective_for(task, getattr(val_data, "dataset", None)) if val_data else None
    val_loader = _loader(val_data, 256, world, seed, workers, dev, train=False)[0] if val_data else None

    teacher_home = _device_of(teacher)
    student.to(dev)
    if use_cl:
        student.to(memory_format=torch.channels_last)
    if teacher is not None:
        teacher.to(dev).eval()
        if use_cl:
            teacher.to(memory_format=torch.channels_last)
    if optimizer == "adamw":
        opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    steps = epochs * max(1, len(train_loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    scaler = torch.amp.GradScaler(dev.type) if precision == torch.float16 else None
    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
    start_epoch, best_acc, best_state, history = 0, -1.0, None, []
    state = ckpts.load_matching(ckpt, config, say) if resume and world.is_main else None
    state = dd.broadcast_object(state, world)  # every rank continues from rank 0's checkpoint
    if state is not None:
        student.load_state_dict(with_versions(student, state["model"]))  # an older edgekit saved plain dicts
        opt.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, best_acc, best_state, history = state["epoch"] + 1, state["best_acc"], state["best_state"], state["history"]
        _set_rng_state(state.get("rng"), dev, train_loader)
        say(f"resumed from {ckpt} after epoch {start_epoch}")
    setup = {"device": str(dev), "processes": world.size, "amp": _name(precision), "channels_last": use_cl,
             "workers": workers, "cache_teacher": bool(cache_teacher and teacher is not None)}
    say(f"training on {dev} x {world.size} process(es): batch {per_rank * world.size} ({per_rank} per process), "
        f"amp {setup['amp'] or 'off'}, channels_last {'on' if use_cl else 'off'}, {workers} loader worker(s)")
    model = dd.wrap(student, world, dev)
    cache = TeacherCache(len(train_data)) if setup["cache_teacher"] else None
    durations: list[float] = []
    try:
        for epoch in range(start_epoch, epochs):
            if sampler is not None:
                sampler.set_epoch(epoch)
            record = _epoch(model, teacher, cache, train_loader, opt, scheduler, scaler, dev, precision, use_cl,
                            objective, alpha, temperature, world, epoch, epochs, progress)
            started = time.perf_counter()
            dd.sync_buffers(student, world)
            if val_loader is None:
                val_acc = None
            elif task == "classification":  # summed over ranks under torchrun
                val_acc = accuracy(student, val_loader, dev, world, precision, use_cl)
            else:
                val_acc = val_objective.validate(student, val_loader, dev, lambda x: _to(x, dev, use_cl))
            record.update({f"val_{objective.metric}": val_acc, "val_time_s": time.perf_counter() - started})
            score = val_acc if val_acc is not None else -record["loss"]
            if score > best_acc:
                best_acc, best_state = score, copied_state(student)
            durations.append(record["epoch_time_s"] + record["val_time_s"])
            record["eta_s"] = (epochs - epoch - 1) * sum(durations) / len(durations)
            history.append(record)
            if ckpt and world.is_main:
                with atomic_path(ckpt, force=True) as tmp:
                    torch.save({"config": config, "model": copied_state(student), "optimizer": opt.state_dict(),
                                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                                "epoch": epoch, "best_acc": best_acc, "best_state": best_state,
                                "history": history, "rng": _rng_state(dev, train_loader)}, tmp)
            say(f"epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f}"
                + (f", val {_METRIC_NAMES.get(objective.metric, objective.metric)} {val_acc:.2f}%"
                   if val_acc is not None else "")
                + f", {record['images_per_s']:.0f} images/s, {record['epoch_time_s']:.1f} s"
                + (f", ETA {record['eta_s']:.0f} s" if epoch + 1 < epochs else ""))
        if best_state is not None:
            student.load_state_dict(with_versions(student, best_state))
    finally:
        student.to("cpu").to(memory_format=torch.contiguous_format)
        if teacher is not None:
            teacher.to(teacher_home).to(memory_format=torch.contiguous_format)
    student.eval()
    return TrainHistory(history, best_acc if val_loader else None, **setup, val_metric=objective.metric)


def _epoch(model: Any, teacher: Any, cache: TeacherCache | None, loader: Any, opt: Any, scheduler: Any, scaler: Any,
           dev: Any, precision: Any, use_cl: bool, objective: Any, alpha: float, temperature: float, world: dd.World,
           epoch: int, epochs: int, progress: bool) -> dict[str, Any]:
    """One pass over this rank's share of the data; the returned figures are summed over the ranks."""
    import torch

    from edgekit.log import progress as progress_bar

    model.train()
    loss_sum = torch.zeros((), device=dev)
    batches = images = 0
    per_epoch = max(1, len(loader))
    bar = progress_bar(loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                       disable=None if progress and world.is_main else True)
    start = last_shown = time.perf_counter()
    for x, y, index in bar:
        x, y = _to(x, dev, use_cl), y.to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=precision or torch.float32, enabled=precision is not None):
            with torch.no_grad():
                if teacher is None:
                    soft = None
                else:
                    soft = (cache(teacher, x, index) if cache is not None else teacher(x)).float()
            logits = model(x).float()
        loss = objective.loss(logits, soft, y, alpha, temperature, tuple(x.shape))
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        scheduler.step()
        loss_sum += loss.detach()
        batches += 1
        images += len(x)
        now = time.perf_counter()
        if not bar.disable and now - last_shown > 0.5:  # the loss needs a device sync: not every batch
            last_shown, rate = now, batches / (now - start)
            left = (per_epoch - batches) + (epochs - epoch - 1) * per_epoch
            bar.set_postfix_str(f"loss {float(loss_sum) / batches:.3f}, {images * world.size / (now - start):.0f} img/s, "
                                f"ETA {_clock(left / rate)}")
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    loss_total, images_total, batches_total = dd.all_sum([float(loss_sum), images, batches], world, dev)
    return {"epoch": epoch + 1, "loss": loss_total / max(1, batches_total), "images": int(images_total),
            "images_per_s": images_total / max(seconds, 1e-9), "epoch_time_s": seconds}


def _loader(data: Any, per_rank: int, world: dd.World, seed: int, workers: int, dev: Any, train: bool) -> tuple[Any, Any]:
    """A DataLoader over this rank's share: DistributedSampler under torchrun, a seeded shuffle otherwise."""
    import torch
    from torch.utils.data import DataLoader, DistributedSampler, Subset

    options = {"num_workers": workers, "pin_memory": dev.type == "cuda", "persistent_workers": workers > 0}
    if not train:  # evaluation: a strided shard per rank, no padding (so no image counts twice)
        shard = Subset(data, range(world.rank, len(data), world.size)) if world.distributed else data
        return DataLoader(shard, batch_size=per_rank, **options), None
    if world.distributed:
        sampler = DistributedSampler(data, num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed)
        count = len(sampler)
        return DataLoader(data, batch_size=per_rank, sampler=sampler, drop_last=count > per_rank, **options), sampler
    generator = torch.Generator().manual_seed(seed)  # its state goes into each checkpoint (_rng_state)
    return DataLoader(data, batch_size=per_rank, shuffle=True, generator=generator,
                      drop_last=len(data) > per_rank, **options), None


def _rng_state(dev: Any, loader: Any) -> dict[str, Any]:
    """The random state after an epoch: torch's (dropout, stochastic depth) and the one-process shuffle's
    generator, so that a resumed run draws what an uninterrupted one would have (the generator, seeded
    anew, replayed epoch 1's order after a resume). Under torchrun the sampler shuffles by seed + epoch."""
    import torch

    shuffle = getattr(loader, "generator", None)
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
            "shuffle": shuffle.get_state() if shuffle is not None else None}


def _set_rng_state(saved: dict[str, Any] | None, dev: Any, loader: Any) -> None:
    import torch

    if not saved:  # a checkpoint from before edgekit kept it
        return
    torch.set_rng_state(saved["cpu"])
    if saved.get("cuda") is not None and dev.type == "cuda":
        torch.cuda.set_rng_state(saved["cuda"], dev)
    shuffle = getattr(loader, "generator", None)
    if saved.get("shuffle") is not None and shuffle is not None:
        shuffle.set_state(saved["shuffle"])


def _check(epochs: int, optimizer: str, batch_size: int, workers: int) -> None:
    if epochs < 1:
        raise EdgekitError(f"--epochs: must be at least 1, got {epochs}")
    if optimizer not in ("adamw", "sgd"):
        raise EdgekitError(f"--optimizer: {optimizer!r} is not adamw or sgd")
    if batch_size < 1:
        raise EdgekitError(f"--batch-size: must be at least 1, got {batch_size}")
    if workers < 0:
        raise EdgekitError(f"--workers: must be 0 or more, got {workers}")


def _precision(dev: Any, amp: bool | None, amp_dtype: str | None) -> Any:
    """The autocast dtype, or None for float32: on by default on CUDA; bf16 where supported, else fp16."""
    import torch

    if amp_dtype not in (None, "bf16", "fp16"):
        raise EdgekitError(f"--amp-dtype: {amp_dtype!r} is not bf16 or fp16")
    if not (dev.type == "cuda" if amp is None else amp):
        return None
    if amp_dtype == "fp16":
        return torch.float16
    if amp_dtype == "bf16" or dev.type == "cpu" or (dev.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _name(precision: Any) -> str | None:
    import torch

    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(precision)


def _device_of(model: Any) -> Any:
    import torch

    if model is None:
        return None
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"
