"""What a benchmark results file records about its run: the command, package versions and the machine."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]  # benchmarks/ lives at the repository root, never in the wheel
RESULTS = REPO / "benchmarks" / "results"
PACKAGES = ("torch", "lightning", "k-diffusion", "torchsde", "torchdiffeq", "diffusers")


def version_of(package: str) -> str:
    """Installed version of a distribution, or 'not installed'."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def command_line(subcommand_args: list[str] | None = None) -> str:
    """The command that reproduces this run: the interpreter (relative to the repo when inside it) and the args."""
    args = sys.argv[1:] if subcommand_args is None else subcommand_args
    try:  # a venv's python is a symlink: keep the venv path, do not resolve it
        shown = str(Path(os.path.abspath(sys.executable)).relative_to(REPO))
    except ValueError:
        shown = "python"
    return " ".join([shown, "-m", "benchmarks", *args])


def git_state() -> str:
    """Short commit hash plus '+dirty' when the work tree has changes ('unknown' outside git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True,
                               check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    """Platform, processor, logical CPU count, torch threads and the load average now."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    cpu = platform.processor() or platform.machine()
    return (f"{platform.platform()}, {cpu}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}, "
            f"load average {load[0]:.1f} at the start")


def header(title: str, command: str, extra: list[str] | None = None) -> list[str]:
    """The opening lines of a results file."""
    versions = ", ".join(f"{p} {version_of(p)}" for p in PACKAGES)
    lines = [f"## {title}", "", f"Command: `{command}`", "",
             f"Versions: python {platform.python_version()}, {versions}; fastdiff at git {git_state()}.", "",
             f"Machine: {machine()}.", ""]
    return lines + (extra or [])
