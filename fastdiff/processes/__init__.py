"""Forward processes: ``from fastdiff.processes import VE, VP, PSLD``."""
from ..registry import PROCESSES, build
from .base import EDMView, Process, append_dims
from .phase_space import PhaseSpaceProcess
from .psld import PSLD
from .ve import VE
from .vp import VP


def get_process(name: str, **kwargs) -> Process:
    """Build a registered process by name (``ve``, ``vp``, ``psld``) with keyword options."""
    return build(PROCESSES, name, **kwargs)


__all__ = ["Process", "EDMView", "PhaseSpaceProcess", "VE", "VP", "PSLD", "PROCESSES", "get_process", "append_dims"]
