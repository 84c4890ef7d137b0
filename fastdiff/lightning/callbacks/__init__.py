"""Lightning callbacks: EMA (and, from other files, sampling evaluation and writers)."""
from fastdiff.lightning.callbacks.ema import EMA, find_ema

__all__ = ["EMA", "find_ema"]
