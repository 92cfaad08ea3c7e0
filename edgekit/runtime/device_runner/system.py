"""What a reader needs to trust a number: CPU, ISA flags, governor, temperature, load, runtimes."""
from __future__ import annotations

import os
import platform
import re
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


X86_CPUINFO = ("GenuineIntel", "AuthenticAMD", "HygonGenuine", "CentaurHauls")
ARM_MACHINES = ("aarch64", "arm64", "armv7l", "armv8l", "armv6l")


def emulation(machine: str, cpuinfo: str) -> str | None:
    """How this Python is emulated, or None when it runs on its own CPU. A user-mode emulator
    (qemu-user) runs ARM code on an x86 host and passes the host's /proc/cpuinfo through: an ARM
    Python that reads an x86 vendor in it is emulated, and its timings say nothing of ARM speed
    (measured here: 25-30x slower). An ARM Python whose cpuinfo says ARM, and any x86 one, is not."""
    if machine.lower() not in ARM_MACHINES:
        return None
    if any(vendor in cpuinfo for vendor in X86_CPUINFO) or re.search(r"^flags\s*:.*\bsse", cpuinfo, re.M):
        return f"qemu-user ({machine} on an x86-64 host)"
    return None


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
    info["emulated"] = emulation(info["machine"], text)
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
