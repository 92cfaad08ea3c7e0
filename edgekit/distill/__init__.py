"""Knowledge distillation and the training loop behind baselines, fine-tuning and pruned students."""
from edgekit.distill.history import TrainHistory
from edgekit.distill.recover import RecoverSettings, between_steps, distill_stage, recover
from edgekit.distill.train import accuracy, distillation_loss, fit, train

__all__ = ["RecoverSettings", "TrainHistory", "accuracy", "between_steps", "distill_stage", "distillation_loss", "fit",
           "recover", "train"]
