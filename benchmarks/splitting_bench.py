"""Quality vs NFE of the PSLD splitting samplers (Pandey, Rudolph & Mandt 2024) against EM and PF-ODE baselines.

Scenarios: ``gauss``: the exact law of each sampler's output for 2-D Gaussian data (the oracle score is affine
then, so every step is an affine map of (state, noise); probing it with unit vectors propagates the mean and
covariance exactly: pure discretisation error, no Monte Carlo noise); the exact-score oracle on the 2-D ring mixture (the toy2d ``rings`` law: 8 Gaussians on a circle of
radius sqrt(2), std 0.1) and on a 16-D anisotropic ``GaussianMixture.random``; optionally a trained PSLD
network on the same rings (``--ckpt``). Metrics: RBF MMD^2 and sliced W2 against fresh target samples, with
the noise floor (two independent target sets of the same size) reported beside, and the log-likelihood gap
mean log p_data(samples) - mean log p_data(target samples) under the exact data law (> 0: too concentrated,
< 0: too spread out; low variance, so it separates samplers where SW/MMD sit at their floor).

    python benchmarks/splitting_bench.py --n 2000 --nfe 20 50 100 200 --out /tmp/bench_splitting.md
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from fastdiff.data.toy2d import rings_mixture
from fastdiff.metrics.toy import mmd_rbf, sliced_wasserstein
from fastdiff.oracle import GaussianMixture
from fastdiff.processes import PSLD
from fastdiff.samplers import SamplerError, get_sampler
from fastdiff.samplers.base import CountedScore

Q = {"grid": "quadratic"}


def sampler_configs() -> list[tuple[str, str, dict[str, Any]]]:
    """(label, registered name, options) of every configuration benchmarked."""
    cfgs: list[tuple[str, str, dict[str, Any]]] = [
        ("euler_maruyama (quadratic)", "euler_maruyama", dict(Q)),
        ("euler_maruyama (uniform)", "euler_maruyama", {"grid": "uniform"}),
        ("sscs", "sscs", {}),
        ("oba (naive)", "oba", {}),
        ("bao (naive)", "bao", {}),
        ("obab (naive)", "obab", {}),
        ("obab (naive) λm=0.5", "obab", {"lambda_m": 0.5}),
    ]
    sps = [("start", 1.0, 1.0), ("mid", 1.0, 1.0), ("end", 1.0, 1.0), ("start", 0.0, 1.0),
           ("start", 1.0, 0.7), ("start", 1.0, 0.5), ("start", 1.0, 0.3), ("mid", 1.0, 0.5), ("end", 1.0, 0.5),
           ("start", 0.0, 0.5)]
    for label, lam_s, lam_m in sps:
        cfgs.append((f"sps t={label} λs={lam_s:g} λm={lam_m:g}", "sps",
                     {"time_label": label, "lambda_s": lam_s, "lambda_m": lam_m}))
    cfgs += [
        ("ode_euler (quadratic)", "ode_euler", dict(Q)),
        ("ode_heun (quadratic)", "ode_heun", dict(Q)),
        ("split_ode ba naive", "split_ode", {"scheme": "ba", "reduced": False}),
        ("split_ode ba reduced", "split_ode", {"scheme": "ba", "reduced": True}),
        ("split_ode bab naive", "split_ode", {"scheme": "bab", "reduced": False}),
        ("split_ode bab reduced", "split_ode", {"scheme": "bab", "reduced": True}),
    ]
    return cfgs


@dataclass
class Scenario:
    """A target law, the score used to sample it and the process it was defined on."""

    name: str
    process: PSLD
    score_fn: Callable
    target: GaussianMixture
    bandwidths: tuple[float, ...]


def build_scenarios(names: list[str], ckpt: str | None) -> list[Scenario]:
    p = PSLD()
    rings = GaussianMixture(*rings_mixture(0.1))
    out = []
    if "ring" in names:
        out.append(Scenario("ring (2-D, oracle)", p, rings.score_fn(p), rings, (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)))
    if "gmm16" in names:
        gm = GaussianMixture.random(k=8, d=16, seed=0)
        out.append(Scenario("gmm16 (16-D anisotropic, oracle)", p, gm.score_fn(p), gm, (0.25, 0.5, 1.0, 2.0, 4.0)))
    if "net" in names:
        if ckpt is None:
            print("scenario 'net' skipped: no --ckpt given")
        else:
            from fastdiff.lightning.checkpoint import load_score_model

            model = load_score_model(ckpt).eval()
            out.append(Scenario(f"ring (2-D, trained PSLD MLP {ckpt})", model.process, model, rings,
                                (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)))
    return out


METRICS = [("MMD^2 x 1e4", 1e4), ("sliced W2 x 1e3", 1e3), ("log-lik gap x 1e3 (nats)", 1e3)]


def loglik_gap(gm: GaussianMixture, x: torch.Tensor, ref: torch.Tensor) -> float:
    """mean log p_data(x) - mean log p_data(ref) under the exact data law (the mixture at t = 0)."""
    comp = torch.distributions.MultivariateNormal(gm.means, scale_tril=torch.linalg.cholesky(gm.covs))

    def logp(y: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(torch.log(gm.weights) + comp.log_prob(y.double()[:, None, :]), dim=1)

    return float(logp(x).mean() - logp(ref).mean())


def metrics(x: torch.Tensor, ref: torch.Tensor, sc: "Scenario") -> tuple[float, float, float]:
    """(MMD^2, sliced W2, log-likelihood gap) of samples x against reference target samples."""
    gap = loglik_gap(sc.target, x, ref)
    return float(mmd_rbf(x, ref, sc.bandwidths)), float(sliced_wasserstein(x, ref)), gap


def run_scenario(sc: Scenario, cfgs: list, nfes: list[int], n: int) -> dict[str, Any]:
    """SW2 / MMD per (config, NFE) plus the noise floor; each sampler uses seeds 0..n-1."""
    ref = sc.target.sample(n, torch.Generator().manual_seed(10_000)).float()
    floor = metrics(sc.target.sample(n, torch.Generator().manual_seed(20_000)).float(), ref, sc)
    rows: dict[str, dict[int, tuple[float, ...]]] = {}
    for label, name, opts in cfgs:
        rows[label] = {}
        for nfe in nfes:
            try:
                s = get_sampler(name, nfe=nfe, **opts)
            except SamplerError:
                continue
            t0 = time.time()
            try:
                res = s.sample(sc.score_fn, sc.process, (n, sc.target.dim), seeds=range(n))
                rows[label][nfe] = (*metrics(res.x, ref, sc), float(res.nfe))
            except FloatingPointError:  # SamplingNaNError: the scheme diverged at this budget
                rows[label][nfe] = (float("inf"),) * len(METRICS) + (float(s.nfe),)
            r = rows[label][nfe]
            print(f"  {sc.name:34s} {label:28s} nfe {nfe:4d} (counted {r[-1]:g}) MMD {r[0]:.2e} SW {r[1]:.4f} "
                  f"gap {r[2]:+.4f} [{time.time() - t0:.1f}s]", flush=True)
    return {"floor": floor, "rows": rows}


# ---- exact law on Gaussian data (affine probing) ---------------------------------------------------------------
class _UnitNoise:
    """Noise stand-in: draw j is the identity on the rows reserved for draw j (zeros elsewhere)."""

    def __init__(self, D: int, draws: int) -> None:
        self.D, self.draws, self.calls = D, draws, 0

    def randn_like(self, z: torch.Tensor, idx: Any = None) -> torch.Tensor:
        j, D = self.calls, self.D
        self.calls += 1
        if j >= self.draws:
            raise RuntimeError("more noise draws per step than probed")
        out = torch.zeros_like(z)
        out[1 + D + j * D: 1 + D + (j + 1) * D] = torch.eye(D, dtype=z.dtype)
        return out


def _probe(fn: Callable, D: int, draws: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(P, q, R) of an affine map fn(z, noise) = q + P z + R xi."""
    n = 1 + D + draws * D
    z = torch.zeros(n, D, dtype=torch.float64)
    z[1:1 + D] = torch.eye(D, dtype=torch.float64)
    out = fn(z, _UnitNoise(D, draws), n)
    return (out[1:1 + D] - out[0]).T, out[0], (out[1 + D:] - out[0]).T


def exact_gaussian_error(name: str, opts: dict[str, Any], nfe: int, gm: GaussianMixture, p: PSLD,
                         target: str = "tweedie") -> float:
    """|mean error| + |covariance error|_F of the sampler's output law vs the law of E[x0 | z_{t_eps}]
    (``target="tweedie"``) or vs the data law N(mu, Sigma) itself (``target="data"``)."""
    s = get_sampler(name, nfe=nfe, dtype="float64", **opts)
    d, sf = gm.dim, gm.score_fn(p)
    ts = s.grid(p, "cpu")
    mu = torch.zeros(2 * d, dtype=torch.float64)
    cov = torch.diag(torch.tensor([1.0] * d + [p.mass] * d, dtype=torch.float64))
    segs = [ts[i:i + 2] for i in range(len(ts) - 1)] if s.stochastic else [ts]
    for seg in segs:  # stochastic samplers here carry no state between steps
        P, q, R = _probe(lambda z, nz, n: s.integrate(CountedScore(sf, n, "cpu"), p, z, seg, nz), 2 * d, 2)
        mu, cov = P @ mu + q, P @ cov @ P.T + R @ R.T
    P, q, _ = _probe(lambda z, nz, n: s.finish(CountedScore(sf, n, "cpu"), p, z, ts[-1]), 2 * d, 0)
    mu, cov = (P @ mu + q)[:d], (P @ cov @ P.T)[:d, :d]
    if target == "data":
        cov0 = gm.covs[0]
    else:
        a, _ = p.marginal_coeffs(torch.tensor([p.t_eps_sample], dtype=torch.float64))
        C = torch.kron(a[0][:, None], gm.covs[0])  # Cov(z, x0)
        cov0 = C.T @ torch.linalg.solve(gm.marginal_params(p, p.t_eps_sample)[1][0], C)
    return float((mu - gm.means[0]).norm() + (cov - cov0).norm())


def gaussian_table(cfgs: list, nfes: list[int]) -> str:
    gm, p = GaussianMixture.gaussian([0.5, -0.3], [[0.5, 0.2], [0.2, 0.3]]), PSLD()
    lines = ["### gauss (2-D Gaussian, exact output law, no Monte Carlo noise)", "",
             "|mean err| + |cov err|_F x 1e3 of the output law (target: law of E[x0 | z_t_eps])", "",
             "| sampler | " + " | ".join(f"NFE {m}" for m in nfes) + " |", "|---|" + "---|" * len(nfes)]
    for label, name, opts in cfgs:
        cells = []
        for m in nfes:
            try:
                cells.append(fmt(exact_gaussian_error(name, opts, m, gm, p), 1e3))
            except SamplerError:
                cells.append("n/a")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        print("  gauss", lines[-1], flush=True)
    return "\n".join(lines + [""])


def fmt(v: float, scale: float) -> str:
    return "diverged" if v == float("inf") else f"{v * scale:.1f}"


def best_lines(result: dict[str, Any], nfes: list[int]) -> list[str]:
    """Per NFE, the configuration with the lowest MMD^2 and the one with the smallest |log-lik gap|."""
    out = []
    for m in nfes:
        rows = {lab: r[m] for lab, r in result["rows"].items() if m in r}
        by_mmd = min(rows, key=lambda lab: rows[lab][0])
        by_gap = min(rows, key=lambda lab: abs(rows[lab][2]))
        out.append(f"- NFE {m}: lowest MMD^2 {by_mmd} ({rows[by_mmd][0] * 1e4:.1f}); "
                   f"smallest |gap| {by_gap} ({rows[by_gap][2] * 1e3:+.1f})")
    return out


def markdown(sc: Scenario, result: dict[str, Any], nfes: list[int], n: int) -> str:
    """One table per metric, rows = sampler configs, columns = NFE budgets."""
    lines = [f"### {sc.name}, n = {n}", ""]
    for k, (what, scale) in enumerate(METRICS):
        lines.append(f"{what} (noise floor {fmt(result['floor'][k], scale)}; counted NFE in brackets where below budget)")
        lines.append("")
        lines.append("| sampler | " + " | ".join(f"NFE {m}" for m in nfes) + " |")
        lines.append("|---|" + "---|" * len(nfes))
        for label, row in result["rows"].items():
            cells = []
            for m in nfes:
                if m not in row:
                    cells.append("n/a")
                    continue
                v, used = row[m][k], row[m][-1]
                cells.append(fmt(v, scale) + ("" if used == m else f" ({used:g})"))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines + best_lines(result, nfes) + [""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="samples per configuration (and per target set)")
    ap.add_argument("--nfe", type=int, nargs="+", default=[20, 50, 100, 200])
    ap.add_argument("--scenarios", nargs="+", default=["gauss", "ring", "gmm16", "net"],
                    choices=["gauss", "ring", "gmm16", "net"])
    ap.add_argument("--ckpt", default=None, help="PSLD checkpoint trained on toy2d rings (scenario 'net')")
    ap.add_argument("--out", default=None, help="write the markdown tables here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfgs = sampler_configs()
    parts = [gaussian_table(cfgs, args.nfe)] if "gauss" in args.scenarios else []
    for sc in build_scenarios(args.scenarios, args.ckpt):
        print(f"== {sc.name}", flush=True)
        parts.append(markdown(sc, run_scenario(sc, cfgs, args.nfe, args.n), args.nfe, args.n))
    text = "\n".join(parts)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
