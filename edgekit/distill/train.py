"""Training and knowledge distillation: one loop for baselines, fine-tuning and pruned students.

Loss (Hinton et al.): ``alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE``.
Samples without labels (an unlabelled image folder) use pure distillation (alpha = 1), which lets
users recover a pruned model's accuracy from unlabelled images alone. Without a teacher it is plain
supervised training. Seeded, cosine schedule, evaluation every epoch, best checkpoint kept, and
resumable: a checkpoint is written after every epoch and picked up by the next run.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.atomic import atomic_path
from edgekit.data import load_recipe, open_dataset
from edgekit.errors import EdgekitError


class TorchData:
    """A torch Dataset over an edgekit data source, decoded lazily (folders never sit in memory)."""

    def __init__(self, source: str, recipe: Any) -> None:
        self.dataset = open_dataset(source, recipe)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        import torch

        x, y = self.dataset.get(index)
        return torch.from_numpy(x), y


def distillation_loss(student_logits: Any, teacher_logits: Any | None, labels: Any, alpha: float, temperature: float) -> Any:
    """KD loss per batch; rows whose label is -1 (unlabelled) get the distillation term only."""
    import torch
    import torch.nn.functional as F

    labelled = labels >= 0
    ce = F.cross_entropy(student_logits[labelled], labels[labelled]) if labelled.any() else student_logits.sum() * 0
    if teacher_logits is None:
        return ce
    t = temperature
    kd = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.softmax(teacher_logits / t, dim=1),
                  reduction="batchmean") * (t * t)
    weight = alpha if labelled.all() else torch.where(labelled, alpha, 1.0).float().mean()
    return weight * kd + (1 - weight) * ce


def accuracy(model: Any, loader: Any) -> float | None:
    """Top-1 percent on labelled data (None when the data has no labels)."""
    import torch

    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            keep = y >= 0
            if keep.any():
                correct += int((model(x[keep]).argmax(1) == y[keep]).sum())
                total += int(keep.sum())
    return 100.0 * correct / total if total else None


def train(
    student: Any,
    train_source: str,
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
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``student`` in place (best validation weights kept); returns the per-epoch history."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    if epochs < 1:
        raise EdgekitError(f"--epochs: must be at least 1, got {epochs}")
    if optimizer not in ("adamw", "sgd"):
        raise EdgekitError(f"--optimizer: {optimizer!r} is not adamw or sgd")
    torch.manual_seed(seed)
    np.random.seed(seed)
    recipe = load_recipe(recipe)
    train_data = TorchData(train_source, recipe)
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_data, batch_size=batch_size, shuffle=True, generator=generator, drop_last=len(train_data) > batch_size)
    val_loader = DataLoader(TorchData(val_source, recipe), batch_size=256) if val_source else None
    if optimizer == "adamw":
        opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    steps = epochs * max(1, len(train_loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    if teacher is not None:
        teacher.eval()
    start_epoch, best_acc, best_state, history = 0, -1.0, None, []
    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
    if ckpt and resume and ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        student.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_acc, best_state, history = state["epoch"] + 1, state["best_acc"], state["best_state"], state["history"]
        log(f"resumed from {ckpt} after epoch {start_epoch}")
    for epoch in range(start_epoch, epochs):
        student.train()
        total_loss, batches = 0.0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", disable=None if progress else True, leave=False)
        for x, y in bar:
            with torch.no_grad():
                teacher_logits = teacher(x) if teacher is not None else None
            loss = distillation_loss(student(x), teacher_logits, y, alpha, temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            scheduler.step()
            total_loss += float(loss.detach())
            batches += 1
            bar.set_postfix(loss=f"{total_loss / batches:.3f}")
        val_acc = accuracy(student, val_loader) if val_loader else None
        score = val_acc if val_acc is not None else -total_loss / max(1, batches)
        if score > best_acc:
            best_acc, best_state = score, copy.deepcopy(student.state_dict())
        history.append({"epoch": epoch + 1, "loss": total_loss / max(1, batches), "val_top1": val_acc})
        log(f"epoch {epoch + 1}/{epochs}: loss {total_loss / max(1, batches):.4f}"
            + (f", val top-1 {val_acc:.2f}%" if val_acc is not None else ""))
        if ckpt:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(ckpt, force=True) as tmp:
                torch.save({"model": student.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": scheduler.state_dict(), "epoch": epoch, "best_acc": best_acc,
                            "best_state": best_state, "history": history}, tmp)
    if best_state is not None:
        student.load_state_dict(best_state)
    student.eval()
    return {"epochs": history, "best_val_top1": best_acc if val_loader else None}
