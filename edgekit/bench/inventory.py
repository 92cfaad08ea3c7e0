"""A YAML inventory of devices, so ``--host pi4`` means the same board, user, key and Python in
every command that takes ``--host`` (bench, run, and quantize/prune when they measure on a device).

Format (``--inventory FILE``, else ``$EDGEKIT_INVENTORY``; no file is read implicitly)::

    devices:
      - name: pi4                  # what --host names
        host: pi@10.0.0.5          # user@addr[:port] or an ~/.ssh/config alias
        target: rpi4               # target profile (optional)
        python: /usr/bin/python3   # the device's Python (optional)
        known_hosts: ~/.ssh/known_hosts   # optional; relative paths are relative to the inventory file
        identity: ~/.ssh/id_pi            # optional

A value given on the command line wins over the device's; the device's over the target profile's.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgekit.errors import EdgekitError
from edgekit.yamlfile import load_validated

INVENTORY_ENV = "EDGEKIT_INVENTORY"


class DeviceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    host: str = Field(min_length=1)
    target: str | None = None
    python: str | None = None
    known_hosts: str | None = None
    identity: str | None = None
    ssh_config: str | None = None


class InventoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    devices: list[DeviceEntry]


@dataclasses.dataclass(frozen=True)
class Device:
    """One device to measure on: what ``benchmark(host=..., target=..., remote_python=..., ssh_options=...)`` takes."""

    name: str                 # the inventory name, else the host spec itself
    spec: str                 # user@addr[:port] or an ssh config alias
    target: str | None = None
    remote_python: str | None = None
    ssh_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def label(self) -> str:
        from edgekit.bench.remote import SshTarget

        return SshTarget.parse(self.spec).label()

    def describe(self) -> str:
        """``pi4 (pi@10.0.0.5)`` for an inventory device, else the label a bench document carries."""
        return self.label() if self.name == self.spec else f"{self.name} ({self.label()})"


def inventory_path(given: str | None = None) -> Path | None:
    """``--inventory FILE``, else ``$EDGEKIT_INVENTORY``, else none."""
    chosen = given or os.environ.get(INVENTORY_ENV)
    return Path(chosen).expanduser() if chosen else None


def load_inventory(path: str | Path) -> dict[str, DeviceEntry]:
    """The devices of ``path`` by name; a problem is one line naming the file and the key."""
    from edgekit.bench.remote import SshTarget

    path = Path(path)
    inventory = load_validated(InventoryFile, path, "device inventory")
    devices: dict[str, DeviceEntry] = {}
    for index, entry in enumerate(inventory.devices):
        if entry.name in devices:
            raise EdgekitError(f"{path}: key 'devices.{index}.name': {entry.name!r} is already the name of another device")
        try:
            SshTarget.parse(entry.host)
        except EdgekitError as exc:
            raise EdgekitError(f"{path}: key 'devices.{index}.host': {str(exc).removeprefix('--host: ')}") from exc
        folder = path.parent
        files = {key: str(folder / Path(value).expanduser()) for key in ("known_hosts", "identity", "ssh_config")
                 if (value := getattr(entry, key))}
        devices[entry.name] = entry.model_copy(update=files)
    return devices


def resolve_host(spec: str, inventory: str | Path | None = None, *, target: str | None = None,
                 remote_python: str | None = None, ssh_options: dict[str, Any] | None = None) -> Device:
    """``spec`` as a device: an inventory name, else a host spec as given. The arguments given
    (not None, not False) win over the inventory's values. This is the one place any command
    turns ``--host``/``--inventory`` into what :func:`edgekit.bench.benchmark` takes."""
    from edgekit.bench.remote import SshTarget

    given = {key: value for key, value in (ssh_options or {}).items() if value not in (None, False)}
    path = inventory_path(str(inventory) if inventory else None)
    entry = load_inventory(path).get(spec) if path else None
    if entry is None:
        SshTarget.parse(spec)  # a typo is one line now, not after the others were measured
        return Device(spec, spec, target, remote_python, given)
    mine = {key: getattr(entry, key) for key in ("known_hosts", "identity", "ssh_config") if getattr(entry, key)}
    return Device(entry.name, entry.host, target or entry.target, remote_python or entry.python, {**mine, **given})


def resolve_hosts(specs: list[str], inventory: str | Path | None = None, **options: Any) -> list[Device]:
    """Several ``--host``: each resolved, none named twice (two connections to one board would
    measure each other)."""
    devices = [resolve_host(spec, inventory, **options) for spec in specs]
    seen: dict[str, str] = {}
    for spec, device in zip(specs, devices):
        label = device.label()
        if label in seen:
            raise EdgekitError(f"--host: {spec!r} is the same device as {seen[label]!r} ({label}); name each once")
        seen[label] = spec
    return devices
