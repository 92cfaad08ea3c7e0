"""Host-ISA policy for INT8 arithmetic: where ONNX Runtime's U8S8 kernels saturate.

A leaf module (stdlib only) at the top of the package, so that both the target profiles and the
quantizer can ask it without importing each other (under ``edgekit/targets/`` it would run that
package's ``__init__``, which loads the profiles, which load the quantizer's settings model). Without VNNI, ORT's U8S8 kernels sum pairs of u8*s8 products in
16 bits (VPMADDUBSW), which saturates when both weights of a pair are large: the digits CNN lost
4.5 top-1 points that way on an AVX2-only EPYC. With VNNI (or AMX) on x86, and on ARM, products
are summed in 32 bits.
"""
from __future__ import annotations

import platform
from typing import Iterable

VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "avx512vnni", "amx_int8"})
X86_NAMES = ("x86_64", "amd64", "x86-64")


def u8s8_saturates(machine: str, isa_flags: Iterable[str]) -> bool:
    """True where ORT's U8S8 kernels add u8*s8 pairs in 16 bits: x86-64 without any VNNI."""
    return machine.lower() in X86_NAMES and not (VNNI_FLAGS & set(isa_flags))


def host_isa_flags() -> list[str]:
    """Every CPU feature flag of this machine (``/proc/cpuinfo``; empty where there is none).

    Read here rather than through the device runner so that this module stays a leaf."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return sorted(set(value.split()))
    except OSError:
        pass
    return []


def host_u8s8_saturates() -> bool:
    """``u8s8_saturates`` for the machine this process runs on."""
    return u8s8_saturates(platform.machine(), host_isa_flags())
