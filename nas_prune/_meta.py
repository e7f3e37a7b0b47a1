"""Package version and code revision, recorded in every exported architecture and trial."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

__version__ = "0.1.0"
PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def data_dir(name: str) -> Path:
    """``search_spaces`` or ``configs``: the repository's folder in a checkout (and an editable
    install), else the copy a wheel installs inside the package (``nas_prune/<name>``)."""
    for candidate in (REPO_ROOT / name, PACKAGE_DIR / name):
        if candidate.is_dir():
            return candidate
    return REPO_ROOT / name


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=5, check=False)
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def code_version() -> dict[str, str | None]:
    import torch

    return {"nas_prune": __version__, "git": git_revision(), "torch": torch.__version__,
            "python": platform.python_version()}


def now() -> str:
    """The local time with its UTC offset, to the second: every timestamp the project writes."""
    import datetime as _dt

    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device) -> dict[str, object]:
    """What a run ran on: the torch device, the CPU model and count, the GPU's name."""
    import os

    import torch

    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"device": str(device), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "gpu": gpu}
