"""CPU thread policy: use as many intra-op threads as there are cores not busy with other processes.

torch's intra-op threads synchronise at the end of every parallel region. When another process keeps one of the
cores busy, the thread that shares it is descheduled for whole time slices and every region waits for it: on a
2-core machine the default job fell from 10.7 to 0.42 steps/s (issue 15). One thread per *free* core avoids the
wait. The free cores are measured from /proc/stat (system-wide busy time) minus this process's own CPU time, so our
own threads (spinning included) never count as "other" load. :class:`ThreadGovernor` re-measures every few seconds
during training, so load that starts later (a second experiment, a browser) is followed too.

An explicit setting always wins: ``FASTDIFF_THREADS=N`` or ``OMP_NUM_THREADS=N`` in the environment.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch


def affinity_cores() -> int:
    """Cores this process may run on (the affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def pinned_threads() -> int | None:
    """The thread count the user fixed in the environment (FASTDIFF_THREADS, else OMP_NUM_THREADS), or None."""
    for var in ("FASTDIFF_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) >= 1:
            return int(value)
    return None


@dataclass
class CpuSample:
    """One reading: busy and total jiffies summed over the CPUs we may run on, own CPU seconds, wall time."""

    busy: int
    total: int
    own: float
    wall: float
    n_cpus: int


def _allowed_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def read_cpu() -> CpuSample | None:
    """A reading of /proc/stat over the CPUs of our affinity mask (load on other CPUs does not slow us) and this
    process's CPU time; None where /proc/stat is missing (not Linux)."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    allowed = _allowed_cpus()
    busy = total = n = 0
    for line in lines:
        name, *values = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        if allowed is not None and int(name[3:]) not in allowed:
            continue
        fields = [int(v) for v in values]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        all_ = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest time is inside user)
        busy, total, n = busy + all_ - idle, total + all_, n + 1
    if n == 0:
        return None
    t = os.times()
    return CpuSample(busy=busy, total=total, own=t.user + t.system, wall=time.monotonic(), n_cpus=n)


def free_cores(before: CpuSample, after: CpuSample, cores: int) -> float:
    """Cores of ours not used by other processes between two readings (busy share x CPUs, minus our own CPU;
    our threads run only on these CPUs, so all our CPU time is inside the reading)."""
    jiffies = after.total - before.total
    wall = after.wall - before.wall
    if jiffies <= 0 or wall <= 0:
        return float(cores)
    busy_cpus = (after.busy - before.busy) / jiffies * after.n_cpus  # busy cores, averaged over the window
    others = max(0.0, busy_cpus - (after.own - before.own) / wall)
    return max(0.0, min(float(cores), after.n_cpus - others))


def threads_for(free: float, cores: int) -> int:
    """Threads for ``free`` free cores: a core counts when at least 3/4 of it is free; at least 1, at most cores."""
    return max(1, min(cores, math.floor(free + 0.25)))


def choose_threads(window_s: float = 0.25) -> int:
    """Intra-op threads now: the pinned value, else the cores free over a short window (all cores off Linux)."""
    pinned = pinned_threads()
    if pinned is not None:
        return pinned
    cores = affinity_cores()
    before = read_cpu()
    if before is None:
        return cores
    time.sleep(window_s)
    after = read_cpu()
    return threads_for(free_cores(before, after, cores), cores) if after is not None else cores


def apply_thread_policy(window_s: float = 0.25) -> int:
    """``torch.set_num_threads(choose_threads())``; returns the count."""
    n = choose_threads(window_s)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


class ThreadGovernor:
    """Call :meth:`poll` often (e.g. after every training step); every ``interval_s`` it re-measures the free cores
    over the time since the last measurement and sets torch's thread count. Does nothing when the count is pinned."""

    def __init__(self, interval_s: float = 2.0) -> None:
        self.interval_s = float(interval_s)
        self.cores = affinity_cores()
        self.active = pinned_threads() is None and read_cpu() is not None
        self._last = read_cpu() if self.active else None
        self.changes: list[tuple[float, int]] = []  # (monotonic time, new thread count)

    def poll(self) -> int:
        """The current thread count (changed if the free cores changed)."""
        n = torch.get_num_threads()
        if not self.active or self._last is None or time.monotonic() - self._last.wall < self.interval_s:
            return n
        now = read_cpu()
        if now is None:
            return n
        want = threads_for(free_cores(self._last, now, self.cores), self.cores)
        self._last = now
        if want != n:
            torch.set_num_threads(want)
            self.changes.append((now.wall, want))
        return want
