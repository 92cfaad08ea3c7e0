"""Argument types and options shared by several commands."""
from __future__ import annotations

import argparse


def input_shape(text: str) -> tuple[int, ...]:
    """``1,3,224,224`` -> (1, 3, 224, 224); argparse turns the ValueError into a usage error."""
    try:
        dims = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"{text!r}: every dimension must be a positive integer")
    return dims


def add_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def add_model_source(parser: argparse.ArgumentParser) -> None:
    """The model-source options understood by :func:`edgekit.sources.load_model`."""
    parser.add_argument(
        "model",
        help="torchvision:NAME, module:factory, file.py:factory, model.pt (edgekit's own, a state dict with "
             "--arch, or a whole-model torch.save pickle: unpickling runs code, load only files you trust) "
             "or model.pt2",
    )
    parser.add_argument("--kwargs", help="JSON object of keyword arguments for the factory")
    parser.add_argument("--arch", help="architecture (a source as above) for a state-dict file, or for an edgekit "
                                       ".pt whose recorded architecture is not torchvision's or edgekit.zoo's")
    parser.add_argument("--weights", help="state-dict file to load into the model (never unpickled)")
