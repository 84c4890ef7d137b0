"""Restart vs ODE/SDE baselines on Gaussian mixtures whose score is exact below a noise level and biased above it.

Scenario (b) of DESIGN.md section 8: a learned score's error lives mostly at high noise. Above sigma_b the
score_fn returns the exact score of a *perturbed* mixture (mixture weights tilted by exp(+-tilt), means shifted
along a fixed unit vector by `shift` component stds, covariances x `inflate`); at and below sigma_b it is exact
(sigma_b is compared with sigma_eff = exp(-logSNR/2), the EDM sigma on VP). A deterministic sampler carries the
error made above sigma_b to its output, so its error plateaus as NFE grows; Restart re-noises up to
t_max <= sigma_b and descends with the exact score, contracting the error with every restart. Metrics: sliced
Wasserstein-1 and unbiased multi-scale RBF MMD^2 (fastdiff.metrics.toy) against a fixed target set and the
log-likelihood gap under the exact data law, with their noise floor (fresh target sets).
Every run is also repeated with the exact score ("exact" columns).

    python -m benchmarks restart [--n 2000] [--quick] [--out results.md] [--ckpt last.ckpt [--only-ckpt]
                                       [--ckpt-n N]]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from fastdiff.metrics.toy import mmd_rbf, sliced_wasserstein
from benchmarks.biased import BiasedScore, perturbed
from fastdiff.oracle import GaussianMixture
from fastdiff.processes import PSLD, VP
from fastdiff.processes.base import Process
from fastdiff.samplers import get_sampler, list_samplers
from fastdiff.samplers.restart import t_of_sigma_eff


# ---- metrics -----------------------------------------------------------------------------------------------
class Metric:
    """SW1 and unbiased RBF MMD^2 (fastdiff.metrics.toy) against a fixed target set, plus the log-likelihood gap
    mean log p_data(x) - mean log p_data(target) under the exact mixture (> 0: too concentrated, < 0: too spread).
    MMD bandwidths: 1/4, 1 and 4 x the target's median pairwise distance; MMD uses at most ``mmd_max`` points."""

    def __init__(self, target: Tensor, mix: GaussianMixture, mmd_max: int = 4000) -> None:
        self.target, self.mmd_max = target.double(), mmd_max
        sub = self.target[:1000]
        med = torch.cdist(sub, sub).median().item()
        self.bandwidths = (0.25 * med, med, 4 * med)
        self.comp = torch.distributions.MultivariateNormal(mix.means, scale_tril=torch.linalg.cholesky(mix.covs))
        self.logw = torch.log(mix.weights)
        self.target_logp = self.logp(self.target).mean().item()

    def logp(self, x: Tensor) -> Tensor:
        return torch.logsumexp(self.logw + self.comp.log_prob(x[:, None, :]), dim=1)

    def __call__(self, x: Tensor) -> tuple[float, float, float]:
        x, m = x.double(), self.mmd_max
        return (float(sliced_wasserstein(x, self.target, n_proj=256, p=1.0)),
                float(mmd_rbf(x[:m], self.target[:m], self.bandwidths)),
                self.logp(x).mean().item() - self.target_logp)


# ---- biased score: benchmarks.biased (perturbed, BiasedScore) ----------------------------------------


# ---- runs ------------------------------------------------------------------------------------------------
@dataclass
class Scenario:
    """One mixture x process x bias setting and the sampler runs to compare on it."""

    title: str
    mix: GaussianMixture
    process: Process
    sigma_b: float  # the score is exact for sigma_eff <= sigma_b
    bias: tuple[float, float, float]  # (tilt, shift, inflate) of the perturbed mixture used above sigma_b
    heun_steps: list[int]  # main-pass-only runs (edm_heun on VE/VP, t-space PF-ODE Heun otherwise)
    restarts: list[tuple[int, float, float, list[int]]]  # (N_restart, t_min, t_max in sigma_eff, K values)
    main_steps: int = 18  # N_main of the restart runs
    extra: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


def scenario_rows(sc: Scenario) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, sampler name, kwargs) for the runs of one scenario."""
    p = sc.process
    if p.supports("edm_view"):
        rows = [("edm_heun", "edm_heun", {"steps": s}) for s in sc.heun_steps]
    else:
        rows = [("PF-ODE Heun in t (restart, no intervals)", "restart", {"steps": s, "intervals": []})
                for s in sc.heun_steps]
    rows += sc.extra
    for n_r, lo, hi, ks in sc.restarts:
        if p.supports("edm_view"):
            t_lo, t_hi, unit = lo, hi, ""
        else:  # t-space variant: bounds are times; map the sigma_eff levels
            t_lo, t_hi = (t_of_sigma_eff(p, torch.tensor([v], dtype=torch.float64), float(p.t_eps_sample), 1.0).item()
                          for v in (lo, hi))
            unit = f" (t in [{t_lo:.4f}, {t_hi:.4f}])"
        rows += [(f"restart [{n_r},{k},{lo},{hi}]{unit}", "restart",
                  {"steps": sc.main_steps, "intervals": [[n_r, k, t_lo, t_hi]]}) for k in ks]
    return rows


def cells(m: tuple[float, float, float]) -> str:
    """Table cells: SW1, MMD^2 x 1e3, log-likelihood gap x 1e3."""
    return f"{m[0]:.4f} | {1e3 * m[1]:.3f} | {1e3 * m[2]:+.1f}"


def metric_and_floor(mix: GaussianMixture, n: int, sets: int = 5) -> tuple[Metric, str]:
    """The metric against one target set, and its noise floor: mean +- std over ``sets`` fresh target sets."""
    metric = Metric(mix.sample(n, torch.Generator().manual_seed(1001)).float(), mix)
    vals = torch.tensor([metric(mix.sample(n, torch.Generator().manual_seed(1002 + i)).float()) for i in range(sets)])
    mean, std = vals.mean(0), vals.std(0)
    return metric, (f"noise floor (target vs {sets} fresh target sets, mean +- std): "
                    f"SW1 {mean[0]:.4f} +- {std[0]:.4f}, MMD^2 x1e3 {1e3 * mean[1]:.3f} +- {1e3 * std[1]:.3f}, "
                    f"log-lik gap x1e3 {1e3 * mean[2]:+.1f} +- {1e3 * std[2]:.1f}")


def run_scenario(sc: Scenario, n: int, log: Callable[[str], None]) -> None:
    mix, process = sc.mix, sc.process
    wrong = perturbed(mix, *sc.bias)
    metric, floor = metric_and_floor(mix, n)
    exact, biased = BiasedScore(mix, None, process, sc.sigma_b), BiasedScore(mix, wrong, process, sc.sigma_b)
    log(f"\n### {sc.title}\n")
    log(f"{type(process).__name__}, n = {n}; above sigma_b = {sc.sigma_b} the biased score is that of the mixture "
        f"with weights tilted by exp(+-{sc.bias[0]}), means shifted by {sc.bias[1]} component std, "
        f"covariances x{sc.bias[2]}; {floor}.\n")
    log("| sampler | NFE | SW1 exact | MMD^2 x1e3 exact | gap x1e3 exact | SW1 biased | MMD^2 x1e3 biased | "
        "gap x1e3 biased | s |")
    log("|---|---|---|---|---|---|---|---|---|")
    shape = (n, mix.dim)
    for label, name, kwargs in scenario_rows(sc):
        sampler = get_sampler(name, **kwargs)
        t0 = time.perf_counter()
        res_e = sampler.sample(exact, process, shape, seeds=range(n))
        res_b = sampler.sample(biased, process, shape, seeds=range(n))
        dt = time.perf_counter() - t0
        log(f"| {label} | {res_b.nfe} | {cells(metric(res_e.x))} | {cells(metric(res_b.x))} | {dt:.1f} |")


BUDGETS = (43, 55, 75, 115)  # the paper's VP presets vp_43 .. vp_115 (N_main 18, [3, K, 0.06, 0.30], K = 2/5/10/20)


def trained_rows(process: Process, quick: bool) -> list[tuple[str, str, dict[str, Any]]]:
    """Equal-NFE rows: per budget edm_heun, edm_sde (S_churn 40 and 5), Restart (paper preset, wider interval)."""
    if not process.supports("edm_view"):
        raise SystemExit(f"--ckpt: the equal-NFE comparison needs a VE/VP network, got {type(process).__name__}")
    rows: list[tuple[str, str, dict[str, Any]]] = []
    ks = {43: 2, 55: 5, 75: 10, 115: 20}
    for b in BUDGETS:
        steps = (b + 1) // 2  # edm_heun / edm_sde: NFE = 2 steps - 1
        rows += [(f"edm_heun {steps} steps", "edm_heun", {"steps": steps}),
                 (f"edm_sde {steps} steps, S_churn 40", "edm_sde", {"steps": steps}),
                 (f"edm_sde {steps} steps, S_churn 5", "edm_sde", {"steps": steps, "S_churn": 5.0}),
                 (f"restart preset vp_{b} [3,{ks[b]},0.06,0.30]", "restart", {"preset": f"vp_{b}"})]
        if not quick:  # a wider interval at the same cost
            wide = {"steps": 18, "intervals": [[3, ks[b], 0.06, 1.0]]}
            rows.append((f"restart [3,{ks[b]},0.06,1.0]", "restart", wide))
    return rows


def run_trained(ckpt: str, n: int, quick: bool, log: Callable[[str], None]) -> None:
    """Scenario (c): a network trained by the framework on toy2d rings (exact target: rings_mixture); every row is
    also run with the exact score of the rings mixture under the same process, to separate network error."""
    from fastdiff.data.toy2d import rings_mixture
    from fastdiff.lightning.checkpoint import load_checkpoint, load_score_model

    data_cfg = load_checkpoint(ckpt)["hyper_parameters"]["config"]["data"]
    if data_cfg.get("name") != "toy2d" or data_cfg.get("shape", "rings") != "rings":
        raise SystemExit(f"--ckpt: only toy2d rings checkpoints have an exact target here, got data = {data_cfg}")
    noise = data_cfg.get("noise")
    mix = GaussianMixture(*(rings_mixture() if noise is None else rings_mixture(noise)))
    model = load_score_model(ckpt).eval()
    process = model.process
    exact = mix.score_fn(process)
    metric, floor = metric_and_floor(mix, n)
    log(f"\n### Trained network: {ckpt} ({type(process).__name__}, toy2d rings), equal NFE\n")
    log(f"n = {n}; {floor}. 'exact' = the same sampler with the exact score of the rings mixture.\n")
    log("| sampler | NFE | SW1 net | MMD^2 x1e3 net | gap x1e3 net | SW1 exact | MMD^2 x1e3 exact | "
        "gap x1e3 exact | s |")
    log("|---|---|---|---|---|---|---|---|---|")
    with torch.no_grad():
        for label, name, kwargs in trained_rows(process, quick):
            sampler = get_sampler(name, **kwargs)
            t0 = time.perf_counter()
            res = sampler.sample(model, process, (n, mix.dim), seeds=range(n))
            res_e = sampler.sample(exact, process, (n, mix.dim), seeds=range(n))
            log(f"| {label} | {res.nfe} | {cells(metric(res.x))} | {cells(metric(res_e.x))} | "
                f"{time.perf_counter() - t0:.1f} |")


def scenarios(quick: bool) -> list[Scenario]:
    ks = [1, 2, 5, 10, 20] if quick else [1, 2, 5, 10, 20, 40]
    heun = [8, 18, 64, 256] if quick else [8, 18, 32, 64, 128, 256]
    ring = GaussianMixture.ring(8, 1.0, 0.1)
    aniso = GaussianMixture.random(6, 16, seed=0, scale=1.0, anisotropy=10.0)
    sde = [("edm_sde (S_churn 40)", "edm_sde", {"steps": s}) for s in (18, 64)] if "edm_sde" in list_samplers() else []
    return [
        Scenario("2-D ring of 8 Gaussians (radius 1, std 0.1), VP, sigma view", ring, VP(), 0.30, (1.0, 2.0, 1.5),
                 heun, [(3, 0.06, 0.30, ks)], extra=sde + [("restart preset vp_519", "restart", {"preset": "vp_519"})]),
        Scenario("16-D anisotropic mixture (GaussianMixture.random(6, 16, seed=0)), VP, sigma view", aniso, VP(), 2.0,
                 (0.4, 0.5, 1.5), heun, [(3, 0.06, 0.30, [2, 10, 40]), (4, 0.30, 2.0, ks)], extra=sde),
        Scenario("2-D ring, PSLD, t-space Restart (exact transition jump, PF-ODE Heun in t)", ring, PSLD(), 0.30,
                 (1.0, 2.0, 1.5), [20, 40, 80] if quick else [20, 40, 80, 160], [(3, 0.06, 0.30, [2, 10, 40])],
                 main_steps=40),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="samples per run (and per target set)")
    ap.add_argument("--quick", action="store_true", help="fewer NFE points")
    ap.add_argument("--out", type=str, default=None, help="also write the tables to this markdown file")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ckpt", type=str, default=None, help="also run on a network trained on toy2d rings (scenario c)")
    ap.add_argument("--only-ckpt", action="store_true", help="skip the oracle scenarios")
    ap.add_argument("--ckpt-n", type=int, default=None, help="samples per run for --ckpt (default: --n)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lines: list[str] = []

    def log(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    start = time.perf_counter()
    if not args.only_ckpt:
        for sc in scenarios(args.quick):
            run_scenario(sc, args.n, log)
    if args.ckpt:
        run_trained(args.ckpt, args.ckpt_n or args.n, args.quick, log)
    log(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
