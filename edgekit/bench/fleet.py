"""Several devices measured at once, one SSH connection each; one device failing is that device's
line, never the end of the others' measurements."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Sequence

from edgekit.bench.inventory import Device
from edgekit.bench.run import benchmark_async, check_artifacts, destination, failure_document, is_failure
from edgekit.errors import EdgekitError


async def bench_fleet_async(artifacts: Sequence[str | Path], devices: Sequence[Device], *,
                            targets_dir: str | None = None, **settings: Any) -> list[dict[str, Any]]:
    """One bench document per device, in ``devices`` order; a device that could not be measured
    (unreachable, authentication, host key, runner error) gets :func:`failure_document`."""
    paths = check_artifacts(artifacts, settings.get("runs", 100), settings.get("warmup", 10),
                            settings.get("profile_top"))

    async def one(device: Device) -> dict[str, Any]:
        try:
            return await benchmark_async(paths, target=device.target, targets_dir=targets_dir, host=device.spec,
                                         remote_python=device.remote_python, ssh_options=device.ssh_options,
                                         checked=True, **settings)
        except EdgekitError as exc:
            return failure_document(*where(device, targets_dir), failure_line(device, str(exc)))

    return list(await asyncio.gather(*(one(device) for device in devices)))


def bench_fleet(artifacts: Sequence[str | Path], devices: Sequence[Device], *, parity: bool = False,
                parity_reference: str | Path | None = None, parity_samples: Any = None,
                **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`bench_fleet_async`; with ``parity``, every device runs the same probe set (see
    :func:`edgekit.bench.run.benchmark`)."""
    from edgekit.bench.parity import probe_scope

    with probe_scope([Path(a) for a in artifacts], parity, parity_reference, parity_samples) as probe:
        return asyncio.run(bench_fleet_async(artifacts, devices, probe=probe, **kwargs))


def where(device: Device, targets_dir: str | None) -> tuple[str | None, str]:
    """(profile name, host label) of a device, as its bench document names them."""
    try:
        return destination(device.target, targets_dir, device.spec)
    except EdgekitError:
        return device.target, device.spec


def failure_line(device: Device, message: str) -> str:
    """The error, starting with the device's name: ``pi4 (pi@10.0.0.5): unreachable (...)``."""
    label = device.label()
    if message.startswith(label + ":"):
        message = message[len(label) + 1:].lstrip()
    return f"{device.describe()}: {message}"


def exit_code(documents: Sequence[dict[str, Any]]) -> int:
    """0: every device measured every artifact; 1: some device or artifact failed, the others measured;
    2: no device measured."""
    failed = sum(is_failure(d) for d in documents)
    partial = any(d.get("failed") for d in documents)
    return 2 if documents and failed == len(documents) else 1 if failed or partial else 0
