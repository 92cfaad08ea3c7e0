"""What a reader needs to trust a number: CPU, ISA flags, governor, temperature, load, runtimes."""
from __future__ import annotations

import os
import platform
import sys
import time
from typing import Any

import numpy as np

from .registry import RUNTIMES


def peak_rss_bytes() -> int | None:
    """This process's own peak RSS. VmHWM belongs to the address space made by exec; ru_maxrss
    would inherit the peak of the process that forked us (a 3 GB edgekit with TensorFlow loaded)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(kib) * (1 if sys.platform == "darwin" else 1024)
    except Exception:
        return None


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "fma", "asimd", "asimddp", "i8mm", "neon", "sve")


def isa_flags() -> list[str]:
    """The CPU features that decide INT8 kernels (VNNI, dot product), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return sorted(set(value.split()) & set(ISA_FLAGS))
    except OSError:
        pass
    return []


X86_MACHINES = ("x86_64", "amd64", "i386", "i686")
ARM_MACHINES = ("aarch64", "arm64", "armv7l", "armv8l", "armv6l")


def _cpuinfo_machine(text: str) -> str | None:
    """The machine /proc/cpuinfo describes: qemu-user passes the host's file through unchanged."""
    keys = {line.partition(":")[0].strip().lower() for line in text.splitlines()}
    if "vendor_id" in keys:
        return "x86_64"
    if "cpu implementer" in keys:
        return "aarch64"
    return None


def _emulator_in_host_maps() -> str | None:
    """qemu-user rewrites /proc/self/maps but not a thread's own maps file, where its binary shows."""
    try:
        import threading

        with open(f"/proc/self/task/{threading.get_native_id()}/maps") as handle:
            for line in handle:
                name = line.rsplit("/", 1)[-1].strip() if "/" in line else ""
                if name.startswith("qemu-"):
                    return "qemu-user"
    except (OSError, AttributeError):
        pass
    status = _read_first("/proc/self/status") or ""
    if status.startswith("Name:") and status.split()[1].startswith("qemu-"):
        return "qemu-user"
    return None


def emulation(machine: str, cpuinfo: str) -> tuple[str | None, str | None]:
    """(emulator, host machine), or (None, None) on real hardware: timings under user-mode emulation
    say nothing about the emulated CPU, so every report must mark them."""
    emulator = _emulator_in_host_maps()
    host = _cpuinfo_machine(cpuinfo)
    family = "x86_64" if machine.lower() in X86_MACHINES else "aarch64" if machine.lower() in ARM_MACHINES else None
    if host and family and host != family:
        emulator = emulator or "user-mode emulation"
    elif emulator and not host:
        host = "unknown host"
    return emulator, (host if emulator else None)


def system_info() -> dict[str, Any]:
    """What a reader needs to trust a number: CPU, ISA flags, governor, temperature, load."""
    info: dict[str, Any] = {
        "hostname": platform.node(), "machine": platform.machine(), "system": platform.system(),
        "python": platform.python_version(), "cpu_count": os.cpu_count(), "numpy": np.__version__,
    }
    text = ""
    try:
        with open("/proc/cpuinfo") as handle:
            text = handle.read()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "cpu part") and "cpu_model" not in info:
                info["cpu_model"] = value.strip()
    except OSError:
        pass
    info["isa_flags"] = isa_flags()
    info["emulated"], info["emulation_host"] = emulation(info["machine"], text)
    if info["emulated"]:  # the host's CPU and flags, not the emulated one's
        info["cpu_model"] = f"{info['machine']} emulated by {info['emulated']} on {info['emulation_host']} ({info.get('cpu_model', '?')})"
        info["isa_flags"] = []
    info["cpu_governor"] = _read_first("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    freq = _read_first("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    info["cpu_freq_mhz"] = int(freq) / 1000 if freq and freq.isdigit() else None
    info["temperature_c"] = read_temperature()
    try:
        info["loadavg"] = list(os.getloadavg())
    except OSError:
        info["loadavg"] = None
    versions = runtime_versions()
    info["runtimes"] = versions
    try:
        info["affinity"] = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["affinity"] = None
    return info


def cpu_busy_fraction(window: float = 0.3) -> float | None:
    """Share of all CPUs busy over a short window (from /proc/stat): other work competing right now.
    Unlike the load average it does not remember what this very process did a minute ago."""
    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as handle:
                values = [int(v) for v in handle.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle

    first = sample()
    time.sleep(window)
    second = sample()
    if not first or not second or second[0] == first[0]:
        return None
    return 1.0 - (second[1] - first[1]) / (second[0] - first[0])


def read_temperature() -> float | None:
    """Highest thermal-zone temperature in degrees C, where the OS shows one."""
    temps = []
    base = "/sys/class/thermal"
    try:
        zones = [z for z in os.listdir(base) if z.startswith("thermal_zone")]
    except OSError:
        return None
    for zone in zones:
        value = _read_first(os.path.join(base, zone, "temp"))
        if value and value.lstrip("-").isdigit():
            temps.append(int(value) / 1000.0)
    return max(temps) if temps else None


def _read_first(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None




def runtime_versions() -> dict[str, str]:
    """Every runtime-providing package this Python has (module -> version), read from package
    metadata without importing it: a probe should not pay for importing TensorFlow or OpenVINO."""
    versions: dict[str, str] = {}
    for module in dict.fromkeys(m for spec in RUNTIMES for m in spec.modules):
        try:
            import importlib.util

            if importlib.util.find_spec(module) is None:
                continue
        except (ImportError, ValueError):
            continue
        try:
            import importlib.metadata

            versions[module] = importlib.metadata.version(module.replace("_", "-"))
        except Exception:  # another distribution name (onnxruntime-gpu, tensorflow-cpu), or Python < 3.8
            versions[module] = "installed"
    return versions
