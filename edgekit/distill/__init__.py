"""Knowledge distillation and the training loop behind baselines, fine-tuning and pruned students."""
from edgekit.distill.train import accuracy, distillation_loss, train

__all__ = ["accuracy", "distillation_loss", "train"]
