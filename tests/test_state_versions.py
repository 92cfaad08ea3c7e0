"""Issue 12: torchvision's MNASNet refuses a state dict without its per-module versions
(``_metadata``). edgekit's model files, training checkpoints and best-epoch weights were plain
``{k: v}`` copies, so a pruned or trained MNASNet could not be loaded back, and ``fit`` ended in a
traceback after its last epoch; a user's plain state dict failed the same way."""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision

from edgekit.sources import copied_state, load_model, save_module

ARCH = {"spec": "torchvision:mnasnet0_5", "kwargs": {"num_classes": 10}}


def _mnasnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.mnasnet0_5(num_classes=10).eval()


def test_best_epoch_weights_load_back_into_mnasnet() -> None:
    model = _mnasnet()
    state = copied_state(model)
    with torch.no_grad():
        for value in model.parameters():
            value.add_(1.0)
    model.load_state_dict(state)  # raised ValueError ("version should be set to 1 or 2") before
    assert torch.equal(model.state_dict()["layers.0.weight"], state["layers.0.weight"])


def test_an_mnasnet_model_file_round_trips(tmp_path: Path) -> None:
    model = _mnasnet()
    path = save_module(model, tmp_path / "m.pt", torch.zeros(1, 3, 32, 32), arch=ARCH)
    loaded = load_model(str(path), {}, arch=None, weights=None).module.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_plain_state_dict_without_versions_loads_as_weights(tmp_path: Path) -> None:
    model = _mnasnet()
    weights = tmp_path / "plain.pth"
    torch.save(dict(model.state_dict()), weights)  # a plain dict: no _metadata
    loaded = load_model("torchvision:mnasnet0_5", {"num_classes": 10}, arch=None, weights=str(weights)).module.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_fit_resumes_an_mnasnet_from_a_checkpoint_without_versions(tmp_path: Path) -> None:
    """An older edgekit wrote checkpoints as plain dicts; resuming one must not end in MNASNet's ValueError."""
    from edgekit.distill import train

    def stop_after_first_epoch(line: str) -> None:
        if line.startswith("epoch 1/2"):
            raise KeyboardInterrupt

    options = {"epochs": 2, "checkpoint_dir": tmp_path, "progress": False, "device": "cpu",
               "val_source": "builtin:digits/val"}
    try:
        train(_mnasnet(), "builtin:digits/val", "digits", log=stop_after_first_epoch, **options)
    except KeyboardInterrupt:
        pass
    last = tmp_path / "last.pt"
    state = torch.load(last, weights_only=True)
    assert getattr(state["model"], "_metadata", None) is not None  # what this edgekit writes
    state["model"], state["best_state"] = dict(state["model"]), dict(state["best_state"])  # what an older one wrote
    torch.save(state, last)
    messages: list[str] = []
    history = train(_mnasnet(), "builtin:digits/val", "digits", log=messages.append, **options)
    assert any(m.startswith("resumed from") for m in messages), messages
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
