"""What every benchmark table records about the machine it ran on."""

import datetime
import os
import platform
from pathlib import Path

import torch


def machine_info() -> dict[str, str]:
    """Date, torch version, CPU model name and thread count."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cpu": cpu,
        "threads": str(torch.get_num_threads()),
    }


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())
