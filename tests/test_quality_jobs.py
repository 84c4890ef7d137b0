"""The quality benchmark's parallel runner: problem split and same rows as a one-process run."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from types import SimpleNamespace

import pytest

from benchmarks.quality import QualityConfig, run_quality
from benchmarks.quality_cli import PartStore, assembled, refuse_other_n
from benchmarks.quality_jobs import cost_of, run_parallel, split


def test_split_puts_the_longest_problems_first_on_the_least_loaded_worker() -> None:
    keys = ["ve/rings2d/exact", "vp/digits/trained", "vp/rings2d/trained", "psld/image64/exact", "vp/rings2d/exact"]
    groups = split(keys, 2)
    # LPT by hand: digits 10 -> A; trained 8 -> B; image64 5 -> B (13); rings 2 -> A (12); rings 2 -> A (14)
    assert groups == [["vp/digits/trained", "ve/rings2d/exact", "vp/rings2d/exact"],
                      ["vp/rings2d/trained", "psld/image64/exact"]]
    assert sorted(k for g in groups for k in g) == sorted(keys)
    assert split(keys[:1], 4) == [keys[:1]]  # no empty workers
    assert cost_of("vp/digits/trained") > cost_of("vp/rings2d/trained") > cost_of("vp/image64/exact")


def test_only_restricts_the_problems_run() -> None:
    cfg = QualityConfig(n=50, n_ref=100, budgets=(6,), processes=("vp",), targets=("rings2d",), samplers=["dpmpp_2m"],
                        peers=False, only=("none/such/problem",))
    assert run_quality(cfg).rows == []


@pytest.mark.slow  # ~20 s: two spawned interpreters import torch and fastdiff
def test_parallel_run_gives_the_rows_of_a_one_process_run(tmp_path) -> None:
    cfg = QualityConfig(n=200, n_ref=400, ref_nfe=40, budgets=(6, 10), processes=("ve", "vp"), targets=("rings2d",),
                        samplers=["dpmpp_2m", "ode_euler"], peers=False)
    keys = ["ve/rings2d/exact", "vp/rings2d/exact"]
    run_parallel(cfg, keys, 2, PartStore(cfg, "test", False, tmp_path))
    par, _ = assembled(cfg, keys, tmp_path)
    one = run_quality(cfg).rows
    got = {(r.problem, r.label, r.budget): (r.gap, r.gap_se, r.path) for r in par.rows}
    want = {(r.problem, r.label, r.budget): (r.gap, r.gap_se, r.path) for r in one}
    assert got == want and len(want) == 8  # bit-equal: per-sample seeds, one thread either way


def _digits_like_problem() -> SimpleNamespace:
    """What PartStore reads of a problem without an exact density (a digits network), without the network."""
    return SimpleNamespace(key="vp/digits/trained", title="t", note="", scenario="trained", mixture=None)


def test_a_part_records_its_sample_size_and_the_table_states_it(tmp_path) -> None:
    """The digits networks' n is not in the parts directory's name (that is the oracles' n), so each part records
    the n it ran with and assembling restores it: a table must not claim the n of the assembling command."""
    ran = QualityConfig(n=2000, n_digits=2000)
    PartStore(ran, "ran", False, tmp_path)(_digits_like_problem(), [], None, 0.0, (5,), 1.0)
    later = QualityConfig(n=2000, n_digits=500)
    assembled(later, None, tmp_path)
    assert later.n_digits == 2000


def test_add_refuses_to_merge_rows_of_another_sample_size(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before any work (the CLI: one line, exit 2), and again where a part is merged (any other caller)."""
    PartStore(QualityConfig(n=2000, n_digits=500), "a", False, tmp_path)(_digits_like_problem(), [], None, 0.0, (5,), 1.0)
    refuse_other_n(QualityConfig(n=2000, n_digits=500), [_digits_like_problem()], tmp_path)  # same n: accepted
    with pytest.raises(SystemExit) as err:
        refuse_other_n(QualityConfig(n=2000, n_digits=2000), [_digits_like_problem()], tmp_path)
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "ran with n = 500, this run's is 2000" in lines[0], lines
    with pytest.raises(ValueError, match="n = 500, this run with n = 2000"):
        PartStore(QualityConfig(n=2000, n_digits=2000), "b", True, tmp_path)(
            _digits_like_problem(), [], None, 0.0, (5,), 1.0)


@pytest.mark.slow  # ~10 s: two spawned interpreters
def test_sigterm_to_the_parent_stops_its_workers(tmp_path) -> None:
    """Killing the parent of a parallel run must not leave workers running (and writing parts) behind it."""
    cfg = QualityConfig(n=200_000, n_ref=400, ref_nfe=400, budgets=(100,), processes=("ve", "vp"),
                        targets=("rings2d",), samplers=["ode_euler"], peers=False)  # minutes of work per worker
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    with pytest.raises(SystemExit):
        run_parallel(cfg, ["ve/rings2d/exact", "vp/rings2d/exact"], 2, PartStore(cfg, "test", False, tmp_path))
    timer.join()
    assert mp.active_children() == []
    assert list(tmp_path.glob("*.pt")) == []  # no part was written
