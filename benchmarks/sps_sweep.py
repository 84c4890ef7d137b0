"""Issue 14 sweep: SPS formulations (damped / literal split), lambda_s and the time label vs EM and SSCS at 20 / 50 NFE.

Every configuration runs on the quadratic grid with t_eps = 1e-3 and the PSLD authors' conventions unless its label
says otherwise: network time label at the step start, an NFE budget N = N - 1 steps + one final step, the final
step a noise-free Euler step of the reverse-SDE drift at t_eps (``final_step="euler"``). Scenarios:

- ``gauss``: 2-D Gaussian data, exact output law (every step is affine: probed, no Monte Carlo noise); error =
  |mean - mu| + |cov - Sigma|_F against the data law, on PSLD(0.01, 4.01) and the CIFAR-10 SOTA PSLD(0.02, 4.02).
- ``ring`` / ``gmm16``: exact-score oracles (fastdiff.oracle), n samples; signed log-likelihood gap under the exact
  data density (> 0: too concentrated) with its standard error, and MMD^2.
- ``digits``: a trained digits PSLD network (``--ckpt``); pixel-space Frechet distance of n samples to all 1797
  digits, with the floor of n real digits beside it.

    python benchmarks/sps_sweep.py --scenarios gauss ring gmm16 --out /tmp/sweep_oracle.md
    python benchmarks/sps_sweep.py --scenarios digits --ckpt runs/digits_psld/checkpoints/last.ckpt --n 400
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from splitting_bench import exact_gaussian_error  # noqa: E402

from fastdiff.data.toy2d import rings_mixture  # noqa: E402
from fastdiff.metrics.fid import frechet_distance, mean_cov  # noqa: E402
from fastdiff.metrics.toy import mmd_rbf  # noqa: E402
from fastdiff.oracle import GaussianMixture  # noqa: E402
from fastdiff.processes import PSLD  # noqa: E402
from fastdiff.samplers import get_sampler  # noqa: E402

AUTHORS = {"grid": "quadratic", "final_step": "euler"}
LAMBDAS = (0.0, 0.1, 0.25, 0.5, 1.0)


def configs(full: bool = True, only: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, sampler, options). ``full=False``: the subset run on the (slow) trained network; ``only``: labels
    containing that text."""
    out = [("EM", "euler_maruyama", dict(AUTHORS)), ("SSCS", "sscs", {**AUTHORS, "time_label": "start"}),
           ("EM, Tweedie end", "euler_maruyama", {"grid": "quadratic"}),
           ("SSCS, mid label, Tweedie end", "sscs", {"grid": "quadratic", "time_label": "mid"})]
    grid = [(s, lab, lam) for s in ("damped", "literal") for lab in ("start", "mid", "end") for lam in LAMBDAS]
    if not full:
        grid = [("damped", "start", 1.0), ("damped", "mid", 1.0), ("literal", "start", 1.0)]
    for split, label, lam in grid:
        out.append((f"SPS {split} t={label} λs={lam:g}", "sps",
                    {**AUTHORS, "split": split, "time_label": label, "lambda_s": lam}))
    for lam_m in (0.5, 0.3, 0.8, 0.9) if full else (0.5, 0.8):
        out.append((f"SPS damped t=start λs=1 λm={lam_m:g}", "sps", {**AUTHORS, "lambda_m": lam_m}))
    return [c for c in out if only is None or only in c[0]]


# ---- exact Gaussian law ----------------------------------------------------------------------------------------
def gauss_error(name: str, opts: dict[str, Any], nfe: int, gm: GaussianMixture, p: PSLD) -> float:
    """|mean err| + |cov err|_F of the exact output law against the data law N(mu, Sigma) (inf if it blew up)."""
    err = exact_gaussian_error(name, opts, nfe, gm, p, target="data")
    return err if math.isfinite(err) else float("inf")


# ---- oracle mixtures -------------------------------------------------------------------------------------------
def logp(gm: GaussianMixture, y: torch.Tensor) -> torch.Tensor:
    comp = torch.distributions.MultivariateNormal(gm.means, scale_tril=torch.linalg.cholesky(gm.covs))
    return torch.logsumexp(torch.log(gm.weights) + comp.log_prob(y.double()[:, None, :]), dim=1)


def oracle_metrics(x: torch.Tensor, ref: torch.Tensor, gm: GaussianMixture, bw: tuple) -> tuple[float, float, float]:
    """(log-lik gap, its standard error, MMD^2) of samples x against exact-law reference samples."""
    lx, lr = logp(gm, x), logp(gm, ref)
    se = math.sqrt(float(lx.var()) / len(lx) + float(lr.var()) / len(lr))
    return float(lx.mean() - lr.mean()), se, float(mmd_rbf(x, ref, bw))


def run_sampler(name: str, opts: dict, nfe: int, score, process, shape) -> torch.Tensor | None:
    try:
        x = get_sampler(name, nfe=nfe, **opts).sample(score, process, shape, seeds=range(shape[0])).x
    except FloatingPointError:
        return None
    return x if bool(torch.isfinite(x).all()) and float(x.abs().max()) < 1e3 else None


def fmt(v: float, scale: float = 1.0, se: float | None = None) -> str:
    if v is None or not math.isfinite(v) or abs(v) > 1e6:
        return "diverged"
    return f"{v * scale:.1f}" + ("" if se is None else f" ± {se * scale:.1f}")


def table(title: str, head: str, rows: list[tuple[str, list[str]]], nfes: list[int]) -> str:
    lines = [f"### {title}", "", head, "", "| sampler | " + " | ".join(f"NFE {m}" for m in nfes) + " |",
             "|---|" + "---|" * len(nfes)]
    lines += [f"| {lab} | " + " | ".join(cells) + " |" for lab, cells in rows]
    return "\n".join(lines + [""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--nfe", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--scenarios", nargs="+", default=["gauss", "ring", "gmm16"],
                    choices=["gauss", "ring", "gmm16", "digits"])
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", default=None, help="run only the configurations whose label contains this text")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    parts = []
    if "gauss" in args.scenarios:
        gm = GaussianMixture.gaussian([0.5, -0.3], [[0.5, 0.2], [0.2, 0.3]])
        for proc in (PSLD(), PSLD(gamma=0.02, nu=4.02)):
            rows = [(lab, [fmt(gauss_error(nm, o, m, gm, proc), 1e3) for m in args.nfe])
                    for lab, nm, o in configs(only=args.only)]
            parts.append(table(f"gauss (2-D Gaussian, exact output law), PSLD Γ={proc.gamma:g} ν={proc.nu:g}",
                               "|mean err| + |cov err|_F x 1e3 against the data law", rows, args.nfe))
            print(parts[-1], flush=True)
    p = PSLD()
    oracles = {"ring": (GaussianMixture(*rings_mixture(0.1)), (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)),
               "gmm16": (GaussianMixture.random(k=8, d=16, seed=0), (0.25, 0.5, 1.0, 2.0, 4.0))}
    for key in [s for s in args.scenarios if s in oracles]:
        gm, bw = oracles[key]
        ref = gm.sample(args.n, torch.Generator().manual_seed(10_000)).float()
        floor = oracle_metrics(gm.sample(args.n, torch.Generator().manual_seed(20_000)).float(), ref, gm, bw)
        gap_rows, mmd_rows = [], []
        for lab, nm, o in configs(only=args.only):
            t0, gcell, mcell = time.time(), [], []
            for m in args.nfe:
                x = run_sampler(nm, o, m, gm.score_fn(p), p, (args.n, gm.dim))
                r = oracle_metrics(x, ref, gm, bw) if x is not None else (None, None, None)
                gcell.append(fmt(r[0], 1e3, r[1]) if x is not None else "diverged")
                mcell.append(fmt(r[2], 1e4))
            gap_rows.append((lab, gcell))
            mmd_rows.append((lab, mcell))
            print(f"  {key} {lab}: {gcell} {mcell} [{time.time() - t0:.0f}s]", flush=True)
        parts.append(table(f"{key} (oracle), n = {args.n}", f"log-likelihood gap x 1e3 nats ± SE (floor "
                           f"{fmt(floor[0], 1e3, floor[1])})", gap_rows, args.nfe))
        parts.append(table(f"{key} (oracle), n = {args.n}", f"MMD^2 x 1e4 (floor {fmt(floor[2], 1e4)})", mmd_rows,
                           args.nfe))
    if "digits" in args.scenarios and args.ckpt:
        from fastdiff.data.digits import Digits
        from fastdiff.lightning.checkpoint import load_score_model

        model = load_score_model(args.ckpt).eval()
        data = Digits("all").data.reshape(-1, 64).double()
        mu_d, cov_d = mean_cov(data)

        def fd(x: torch.Tensor) -> float:
            mu, cov = mean_cov(x.reshape(x.shape[0], -1).double())
            return float(frechet_distance(mu, cov, mu_d, cov_d))

        floor = fd(data[torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:args.n]])
        rows = []
        for lab, nm, o in configs(full=False, only=args.only):
            t0 = time.time()
            cells = []
            for m in args.nfe:
                x = run_sampler(nm, o, m, model, model.process, (args.n, 1, 8, 8))
                cells.append(fmt(fd(x), 1e3) if x is not None else "diverged")
            rows.append((lab, cells))
            print(f"  digits {lab}: {cells} [{time.time() - t0:.0f}s]", flush=True)
        parts.append(table(f"digits (trained PSLD U-Net {args.ckpt}), n = {args.n}",
                           f"pixel-space Frechet distance x 1e3 to all 1797 digits (floor: {args.n} real digits "
                           f"{fmt(floor, 1e3)})", rows, args.nfe))
    text = "\n".join(parts)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
