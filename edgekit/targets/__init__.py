"""Target profiles (``targets/*.yaml``): the devices edgekit measures on and their settings."""
from edgekit.targets.profiles import TargetProfile, list_targets, load_target

__all__ = ["TargetProfile", "list_targets", "load_target"]
