"""Assemble BENCHMARKS.md at the repo root from an intro plus every benchmarks/results/*.md, in a fixed order."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from benchmarks.meta import REPO, RESULTS

ORDER = ("frontier", "quality", "speed", "restart", "ggf", "splitting", "throughput", "nfe_accounting")

INTRO = """# Benchmarks

Every number below comes from a run anyone can repeat with the command recorded at the top of its section (with
the versions and machine it ran on). Speed claims are ratios measured side by side in one process.

Reproduce (from the repository root; `benchmarks` is a package of the repository, not of the fastdiff wheel):

```bash
bash benchmarks/setup_peers.sh              # .venv-bench: fastdiff + k-diffusion + diffusers + torchsde + torchdiffeq (peers only)
.venv-bench/bin/python -m benchmarks checkpoints          # trains the small toy2d/digits networks when not cached
.venv-bench/bin/python -m benchmarks quality --trained --jobs 2   # every mixture problem + the cached networks, 2 cores
#   the recorded tables then rerun the digits networks at n = 2000 (~74 min on 2 cores; the default is 500):
.venv-bench/bin/python -m benchmarks quality --only-trained --n-digits 2000 --jobs 3 \
    --ckpt benchmarks/.cache/ckpts/digits_vp/checkpoints/last.ckpt --ckpt benchmarks/.cache/ckpts/digits_ve/checkpoints/last.ckpt \
    --ckpt benchmarks/.cache/ckpts/digits_psld/checkpoints/last.ckpt
.venv-bench/bin/python -m benchmarks quality --assemble   # quality.md from every stored part
#   or split into short commands (one per problem), then assemble:
.venv-bench/bin/python -m benchmarks quality --processes vp --targets image64
.venv-bench/bin/python -m benchmarks quality --assemble
.venv-bench/bin/python -m benchmarks speed
python -m benchmarks restart|ggf|splitting|throughput|nfe [args]    # the per-paper benchmarks
python -m benchmarks report                 # rebuilds this file from benchmarks/results/*.md
```

The peers (k-diffusion, diffusers, torchsde, torchdiffeq) are never dependencies of fastdiff; without them the runs say so and
carry on. Trained networks are cached under the git-ignored `benchmarks/.cache/ckpts/`.
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
