"""fastdiff: train score-based diffusion models (VE, VP, PSLD) and sample them fast."""
__version__ = "0.1.0"
