"""PSLD at NFE <= 50: exponential integrators (exp_ode, exp_sde) vs the existing PSLD samplers.

Metric (ranks): the signed mean log-likelihood gap of the samples under the exact data density (a Gaussian mixture),
mean log p(samples) - mean log p(exact samples), with its standard error (both sample sets' variances);
> 0 over-concentrated, < 0 too spread; a flying seed makes it very negative. Beside it: max |x|_inf over all seeds
and how many seeds leave the box |x|_inf <= ``--box`` (no exact sample of these targets comes near it).

Problems: PSLD on the 2-D toy2d rings (exact score), a 16-D anisotropic 6-component mixture (exact score), and
optionally trained toy2d-rings PSLD networks (``--ckpt``; target: the rings they were trained on).

    OMP_NUM_THREADS=1 python benchmarks/psld_integrators.py --n 2000 --nfe 10 20 35 50 \
        --ckpt /tmp/h6/toy2d_psld/checkpoints/last.ckpt --out benchmarks/results/psld_integrators.md
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any, Callable

import torch

from fastdiff.data.toy2d import rings_mixture
from fastdiff.oracle import GaussianMixture
from fastdiff.processes import PSLD
from fastdiff.samplers import SamplerError, SamplingNaNError, get_sampler

SAMPLERS: list[tuple[str, str, dict[str, Any]]] = [
    ("euler_maruyama (quadratic)", "euler_maruyama", {"grid": "quadratic"}),
    ("sscs", "sscs", {}),
    ("sps", "sps", {}),
    ("sps lambda_m=0.5", "sps", {"lambda_m": 0.5}),
    ("ode_heun (quadratic)", "ode_heun", {"grid": "quadratic"}),
    ("split_ode (bab reduced)", "split_ode", {}),
    ("exp_ode order 1 eps", "exp_ode", {"order": 1}),
    ("exp_ode order 2 eps", "exp_ode", {"order": 2}),
    ("exp_ode order 3 eps", "exp_ode", {"order": 3}),
    ("exp_ode order 2 data", "exp_ode", {"order": 2, "prediction": "data", "tau": "logsnr"}),
    ("exp_ode order 3 data", "exp_ode", {"order": 3, "prediction": "data", "tau": "logsnr"}),
    ("exp_ode order 2 eps logsnr", "exp_ode", {"order": 2, "grid": "logsnr"}),
    ("exp_ode order 3 data logsnr", "exp_ode", {"order": 3, "prediction": "data", "grid": "logsnr", "tau": "logsnr"}),
    ("exp_ode order 2 data clip", "exp_ode", {"order": 2, "prediction": "data", "tau": "logsnr",
                                              "clip_denoised": "CLIP"}),
    ("exp_ode order 1 data clip", "exp_ode", {"order": 1, "prediction": "data", "clip_denoised": "CLIP"}),
    ("exp_ode order 2 data tau=t", "exp_ode", {"order": 2, "prediction": "data", "tau": "t"}),
    ("exp_ode order 3 data tau=t", "exp_ode", {"order": 3, "prediction": "data", "tau": "t"}),
    ("exp_ode order 2 data clip tau=t", "exp_ode", {"order": 2, "prediction": "data", "tau": "t",
                                                   "clip_denoised": "CLIP"}),
    ("exp_sde order 1 eps", "exp_sde", {"order": 1, "prediction": "eps"}),
    ("exp_sde order 1 data", "exp_sde", {"order": 1, "prediction": "data"}),
    ("exp_sde eta=0.5", "exp_sde", {"order": 1, "prediction": "eps", "eta": 0.5}),
    ("exp_sde eta=0.3", "exp_sde", {"order": 1, "prediction": "eps", "eta": 0.3}),
    ("exp_sde order 2 data", "exp_sde", {"order": 2, "prediction": "data", "tau": "logsnr"}),
    ("exp_sde order 2 data tau=t", "exp_sde", {"order": 2, "prediction": "data", "tau": "t"}),
    ("exp_sde order 1 data clip", "exp_sde", {"order": 1, "prediction": "data", "clip_denoised": "CLIP"}),
]


def mixture_log_prob(mix: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """Exact log-density of the data law at x [n, d] (float64)."""
    x = x.reshape(x.shape[0], -1).double()
    comps = torch.distributions.MultivariateNormal(mix.means, scale_tril=torch.linalg.cholesky(mix.covs))
    return torch.logsumexp(comps.log_prob(x[:, None, :]) + torch.log(mix.weights), dim=1)


class Problem:
    def __init__(self, key: str, mix: GaussianMixture, score_fn: Callable, n_ref: int = 20000) -> None:
        self.key, self.mix, self.score_fn, self.process = key, mix, score_fn, PSLD()
        ref = mix.sample(n_ref, torch.Generator().manual_seed(12345))
        self.ref_lp = mixture_log_prob(mix, ref)

    def score(self, x: torch.Tensor) -> tuple[float, float]:
        lp = mixture_log_prob(self.mix, x)
        se = math.sqrt(lp.var().item() / lp.numel() + self.ref_lp.var().item() / self.ref_lp.numel())
        return (lp.mean() - self.ref_lp.mean()).item(), se


def problems(names: list[str], ckpts: list[str]) -> list[Problem]:
    out = []
    proc = PSLD()
    for name in names:
        mix = GaussianMixture(*rings_mixture()) if name == "rings2d" else GaussianMixture.random(6, 16, seed=0)
        out.append(Problem(f"psld/{name}/exact", mix, mix.score_fn(proc)))
    for ck in ckpts:
        from fastdiff.lightning.checkpoint import load_score_model

        model = load_score_model(ck)
        out.append(Problem(f"psld/rings2d/trained ({ck})", GaussianMixture(*rings_mixture()), model))
    return out


def net_check(ckpt: str, rows: list, budgets: list[int], n: int, box: float, batch: int) -> list[str]:
    """Any PSLD checkpoint (e.g. digits, data in [-1, 1]): max |x|_inf over n seeds and the seeds outside the box."""
    from fastdiff.lightning.checkpoint import load_score_model

    model = load_score_model(ckpt)
    proc, shape = model.process, tuple(model.data_shape)
    lines = [f"### {ckpt}: max |x|_inf over {n} seeds (seeds with |x|_inf > {box}; data lie in [-1, 1])", "",
             "| sampler | " + " | ".join(f"NFE {b}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for label, name, kw in rows:
        cells = []
        for nfe in budgets:
            try:
                sampler = get_sampler(name, nfe=nfe, **kw)
                xs = []
                with torch.no_grad():
                    for lo in range(0, n, batch):
                        seeds = range(lo, min(n, lo + batch))
                        res = sampler.sample(model, proc, (len(seeds), *shape), seeds=seeds)
                        xs.append(res.x.reshape(len(seeds), -1))
                amax = torch.cat(xs).abs().amax(1)
                cells.append(f"{amax.max().item():.2f} ({int((amax > box).sum())})"
                             + (f" [{sampler.nfe}]" if sampler.nfe != nfe else ""))
            except (SamplerError, SamplingNaNError) as err:
                cells.append(str(err).split(":")[-1].strip()[:40])
            print(ckpt, label, nfe, cells[-1], flush=True)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def speed_check(ckpt: str, rows: list, nfe: int, batch: int, reps: int) -> list[str]:
    """Wall time of a warm sampler call / (counted NFE x one bare network call on the same batch), side by side."""
    import statistics

    from fastdiff.lightning.checkpoint import load_score_model

    model = load_score_model(ckpt)
    proc, shape = model.process, (batch, *model.data_shape)
    z = torch.randn(proc.state_shape(shape))
    t = torch.full((batch,), 0.5, dtype=torch.float64)
    lines = [f"### cost per NFE, {ckpt}, batch {batch}, NFE {nfe} (median of {reps} side-by-side repeats)", "",
             "| sampler | sampler s | NFE x bare net s | ratio |", "|---|---|---|---|"]
    for label, name, kw in rows:
        sampler = get_sampler(name, nfe=nfe, **kw)
        with torch.no_grad():
            sampler.sample(model, proc, shape, seeds=range(batch))  # warm: memoised coefficients, allocator
            ratios, ts, tb = [], [], []
            for _ in range(reps):
                t0 = time.perf_counter()
                res = sampler.sample(model, proc, shape, seeds=range(batch))
                t1 = time.perf_counter()
                for _ in range(int(res.nfe)):
                    model(z, t)
                t2 = time.perf_counter()
                ts.append(t1 - t0)
                tb.append(t2 - t1)
                ratios.append((t1 - t0) / (t2 - t1))
        lines.append(f"| {label} [{res.nfe}] | {statistics.median(ts):.2f} | {statistics.median(tb):.2f} | "
                     f"{statistics.median(ratios):.3f} |")
        print(lines[-1], flush=True)
    return lines + [""]


def run_cell(problem: Problem, name: str, kw: dict, nfe: int, n: int, box: float) -> dict[str, Any]:
    try:
        sampler = get_sampler(name, nfe=nfe, **kw)
    except SamplerError as err:
        return {"err": str(err).split(":")[-1].strip()}
    t0 = time.time()
    try:
        with torch.no_grad():
            res = sampler.sample(problem.score_fn, problem.process, (n, problem.mix.dim), seeds=range(n))
    except SamplingNaNError as err:
        return {"err": f"NaN/inf in {len(err.seeds)} seeds", "nfe": sampler.nfe}
    x = res.x.double()
    gap, se = problem.score(x)
    amax = x.abs().amax(1)
    return {"gap": gap, "se": se, "max": amax.max().item(), "out": int((amax > box).sum()), "nfe": res.nfe,
            "sec": time.time() - t0}


def fmt(c: dict[str, Any], nfe: int) -> str:
    if "err" in c:
        return c["err"]
    s = f"{c['gap']:+.3f} ± {c['se']:.3f}"
    if c["nfe"] != nfe:
        s += f" ({c['nfe']})"
    return s


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 35, 50])
    ap.add_argument("--problems", nargs="*", default=["rings2d", "aniso16"], choices=["rings2d", "aniso16"])
    ap.add_argument("--ckpt", action="append", default=[])
    ap.add_argument("--net", action="append", default=[], help="any PSLD checkpoint: max |x| check only")
    ap.add_argument("--net-n", type=int, default=1000)
    ap.add_argument("--speed", action="append", default=[], help="checkpoint: cost per NFE vs the bare network")
    ap.add_argument("--speed-reps", type=int, default=3)
    ap.add_argument("--net-box", type=float, default=1.5)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--box", type=float, default=4.0)
    ap.add_argument("--clip", type=float, default=2.0, help="clip_denoised of the 'clip' rows (data range bound)")
    ap.add_argument("--only", nargs="*", default=None, help="labels (substring match) of the samplers to run")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = [(label, name, {k: (args.clip if v == "CLIP" else v) for k, v in kw.items()}) for label, name, kw in SAMPLERS
            if args.only is None or any(o in label for o in args.only)]
    lines = [f"clip rows: clip_denoised = {args.clip}; n = {args.n} seeds (0..{args.n - 1}); "
             f"box |x|_inf <= {args.box}; command: python " + " ".join(sys.argv), ""]
    for prob in problems(args.problems or [], args.ckpt):
        cells = {}
        for label, name, kw in rows:
            for nfe in args.nfe:
                cells[(label, nfe)] = run_cell(prob, name, kw, nfe, args.n, args.box)
                print(prob.key, label, nfe, cells[(label, nfe)], flush=True)
        lines += [f"### {prob.key}", "",
                  "mean log-likelihood gap ± SE (nats; counted NFE in brackets where below the budget)",
                  "", "| sampler | " + " | ".join(f"NFE {b}" for b in args.nfe) + " |",
                  "|---|" + "---|" * len(args.nfe)]
        for label, _, _ in rows:
            lines.append(f"| {label} | " + " | ".join(fmt(cells[(label, b)], b) for b in args.nfe) + " |")
        lines += ["", f"max |x|_inf over all seeds (seeds outside the box)", "",
                  "| sampler | " + " | ".join(f"NFE {b}" for b in args.nfe) + " |", "|---|" + "---|" * len(args.nfe)]
        for label, _, _ in rows:
            vals = [cells[(label, b)] for b in args.nfe]
            lines.append(f"| {label} | " + " | ".join("—" if "err" in c else f"{c['max']:.2f} ({c['out']})"
                                                      for c in vals) + " |")
        lines.append("")
    for ck in args.net:
        lines += net_check(ck, rows, args.nfe, args.net_n, args.net_box, args.batch)
    for ck in args.speed:
        lines += speed_check(ck, rows, args.nfe[0], args.batch, args.speed_reps)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
