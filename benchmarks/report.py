"""Assemble BENCHMARKS.md at the repo root from an intro plus every benchmarks/results/*.md, in a fixed order."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from benchmarks.meta import REPO, RESULTS

ORDER = ("quality", "speed", "restart", "ggf", "splitting", "throughput", "nfe_accounting")

INTRO = """# Benchmarks

Every number below comes from a run anyone can repeat with the command recorded at the top of its section (with
the versions and machine it ran on). Speed claims are ratios measured side by side in one process.

Reproduce:

```bash
bash benchmarks/setup_peers.sh                          # .venv-bench: fastdiff + k-diffusion + torchsde (peers only)
nice -n 10 .venv-bench/bin/python -m benchmarks quality [--ckpt CKPT ...]   # ~25 min, 1 thread
nice -n 10 .venv-bench/bin/python -m benchmarks speed
python -m benchmarks restart|ggf|splitting|throughput [script args]      # the per-paper scripts
python -m benchmarks report                         # rebuilds this file from benchmarks/results/*.md
```

The peers (k-diffusion, torchsde) are never dependencies of fastdiff; without them the runs say so and carry on.
The trained-network rows of `quality` use toy2d checkpoints made with
`python train.py --config configs/toy2d_vp.yaml out_dir=CKPTS/toy2d_vp final_samples.n=0` (likewise `toy2d_psld`);
pass `--ckpt CKPTS/toy2d_vp/checkpoints/last.ckpt --ckpt CKPTS/toy2d_psld/checkpoints/last.ckpt`.
"""


def ordered_results(results: Path) -> list[Path]:
    """The fixed order first, then any other results file alphabetically."""
    files = {p.stem: p for p in sorted(results.glob("*.md"))}
    first = [files.pop(name) for name in ORDER if name in files]
    return first + list(files.values())


def _adapt(text: str, results: Path, root: Path) -> str:
    """Relative image/file links now point from the repo root; a section opening with '# ' is demoted a level."""
    rel = results.relative_to(root).as_posix() if results.is_relative_to(root) else results.as_posix()

    def fix(m: re.Match[str]) -> str:
        target = m.group(2)
        if "://" in target or target.startswith(("/", "#")) or "/" in target:
            return m.group(0)
        return f"{m.group(1)}({rel}/{target})"

    text = re.sub(r"(!?\[[^\]]*\])\(([^)\s]+)\)", fix, text)
    first = next((ln for ln in text.splitlines() if ln.startswith("#")), "")
    if first.startswith("# "):
        out, fence = [], False
        for ln in text.splitlines():
            if ln.startswith("```"):
                fence = not fence
            out.append("#" + ln if ln.startswith("#") and not fence else ln)
        text = "\n".join(out) + "\n"
    return text


def assemble(results: Path = RESULTS, root: Path = REPO) -> str:
    files = ordered_results(results)
    parts = [INTRO, "Sections: " + (", ".join(p.stem for p in files) if files else
                                    "none yet (run the commands above)") + ".", ""]
    for p in files:
        parts += [_adapt(p.read_text().strip() + "\n", results, root)]
    return "\n".join(parts).rstrip() + "\n"


def main(args: argparse.Namespace) -> None:
    out = Path(args.out) if args.out else REPO / "BENCHMARKS.md"
    out.write_text(assemble())
    print(f"wrote {out}")
