"""Train a diffusion model: ``python train.py [--config FILE] [key=value ...]`` (see fastdiff.cli.train)."""
from fastdiff.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
