"""The machine a runner runs on, as its own provenance: host, architecture, the ARM core, and whether
the architecture is emulated (qemu-user), in which case its timings are not speed figures.

Torch-free: it travels with the runner to the device.
"""

from __future__ import annotations

import os
import platform

# ARM's part numbers (/proc/cpuinfo's "CPU part" under implementer 0x41) of the cores clidep's
# device profiles name, and of their neighbours on phones and boards.
ARM_PARTS = {
    "0xd03": "cortex-a53",
    "0xd04": "cortex-a35",
    "0xd05": "cortex-a55",
    "0xd08": "cortex-a72",
    "0xd09": "cortex-a73",
    "0xd0a": "cortex-a75",
    "0xd0b": "cortex-a76",
    "0xd0c": "neoverse-n1",
    "0xd0d": "cortex-a77",
    "0xd41": "cortex-a78",
    "0xd44": "cortex-x1",
    "0xd46": "cortex-a510",
    "0xd47": "cortex-a710",
    "0xd48": "cortex-x2",
    "0xd4d": "cortex-a715",
    "0xd4e": "cortex-x3",
}


def kernel_machine() -> str | None:
    """The architecture of the kernel itself (Linux's kernel.arch sysctl), or None where it cannot be read.

    qemu-user answers uname() with the guest's architecture but leaves this file alone, so it tells an
    emulated process from a native one.
    """
    try:
        with open("/proc/sys/kernel/arch") as f:
            return f.read().strip() or None
    except OSError:
        return None


def emulated() -> str | None:
    """'qemu-user on KERNEL_ARCH' when this process's architecture is not the kernel's, else None."""
    kernel = kernel_machine()
    return f"qemu-user on {kernel}" if kernel and kernel != platform.machine() else None


def arm_core() -> str | None:
    """The first core's name from /proc/cpuinfo ('cortex-a76'), 'arm part 0x…' for a part not in
    ARM_PARTS, or None on another architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        return None
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    if fields.get("CPU implementer") != "0x41" or "CPU part" not in fields:
        return None
    return ARM_PARTS.get(fields["CPU part"], f"arm part {fields['CPU part']}")


def where() -> dict:
    """The machine the runner ran on (the device itself under --remote), as its own provenance."""
    import numpy as np
    import onnxruntime

    return {
        "host": platform.node(),
        "machine": platform.machine(),
        "system": platform.system(),
        "cores": os.cpu_count(),
        "cpu": arm_core(),
        "emulated": emulated(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }
