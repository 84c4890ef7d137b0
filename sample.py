"""Generate samples: ``python sample.py ckpt=PATH sampler=NAME nfe=N seeds=0-49999 out=DIR [...]`` (see fastdiff.cli.sample)."""
from fastdiff.cli.sample import main

if __name__ == "__main__":
    raise SystemExit(main())
