"""Every bad input a user can give train.py, the stats/FID commands (and, in test_bad_inputs_sample.py, sample.py
and the Python API): one line ``error: <what was wrong> — <what is allowed>`` naming the offending key and value,
exit status 2 (or the right exception type for the API), found before any work, and nothing written.

Each table row is (id, arguments, expected fragment). The fragment is the key and the offending value as the
message must show them; placeholders {tmp} (the test's directory) and {ckpt}, {psld}, ... (fixture files)
are filled in per test. The commands run in-process (``main(argv)``) so the suite is fast; three subprocess
cases check the real exit status, that no traceback is printed, and that FASTDIFF_DEBUG=1 shows one.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bad_input_helpers import (ROOT, SAMPLE_BASE, TOY, EVAL_OK, files, _check_one_line, _fill,  # noqa: F401
                               _prepare, _snapshot, _sub)


# ---- train.py -------------------------------------------------------------------------------------------------
TRAIN_CASES = [
    ("ve_sigma_min_negative", ["process.name=ve", "process.sigma_min=-1"], "process.sigma_min: -1.0"),
    ("ve_sigma_min_zero", ["process.name=ve", "process.sigma_min=0"], "process.sigma_min: 0.0"),
    ("ve_sigma_min_above_max", ["process.name=ve", "process.sigma_min=60"], "process.sigma_max: 50.0"),
    ("ve_sigma_max_type", ["process.name=ve", "process.sigma_max=big"], "process.sigma_max: got str 'big'"),
    ("vp_beta_min_zero", ["process.beta_min=0"], "process.beta_min: 0.0"),
    ("vp_beta_min_negative", ["process.beta_min=-1"], "process.beta_min: -1.0"),
    ("vp_beta_max_below_min", ["process.beta_max=0.05"], "process.beta_max: 0.05"),
    ("vp_t_eps_negative", ["process.t_eps_sample=-0.1"], "process.t_eps_sample: -0.1"),
    ("psld_gamma_negative", ["process.name=psld", "process.gamma=-1"], "process.gamma: -1.0"),
    ("psld_beta_zero", ["process.name=psld", "process.beta=0"], "process.beta: 0.0"),
    ("psld_kappa_zero", ["process.name=psld", "process.kappa=0"], "process.kappa: 0.0"),
    ("psld_nu_below_gamma", ["process.name=psld", "process.gamma=5", "process.nu=4"], "process.nu: 4.0"),
    ("psld_t_eps_zero", ["process.name=psld", "process.t_eps_sample=0"], "process.t_eps_sample: 0.0"),
    ("psld_t_eps_above_T", ["process.name=psld", "process.t_eps_sample=1.5"], "process.t_eps_sample: 1.5"),
    ("process_unknown", ["process.name=vpp"], "process.name: unknown process 'vpp'"),
    ("process_unknown_option", ["process.sigma_max=5"], "process.sigma_max: unknown option for process 'vp'"),
    ("batch_size_zero", ["data.batch_size=0"], "data.batch_size: 0"),
    ("batch_size_type", ["data.batch_size=many"], "data.batch_size: got str 'many'"),
    ("num_workers_negative", ["data.num_workers=-1"], "data.num_workers: -1"),
    ("batch_larger_than_data", ["data.batch_size=5000"], "data.batch_size: 5000"),
    ("val_fraction_one", ["data.val_fraction=1.0"], "data.val_fraction: 1.0"),
    ("toy2d_shape", ["data.shape=spiral"], "data.shape: 'spiral'"),
    ("toy2d_n_type", ["data.n=lots"], "data.n: got str 'lots'"),
    ("hflip_on_vectors", ["data.hflip=true"], "data.hflip: true"),
    ("data_unknown", ["data.name=mnist"], "data.name: unknown dataset 'mnist'"),
    ("data_split_reserved", ["data.split=val"], "data.split: str 'val'"),
    ("image_folder_no_root", ["data.name=image_folder"], "data.root: missing"),
    ("image_folder_missing", ["data.name=image_folder", "data.root={tmp}/nowhere"], "data.root: image_folder root"),
    ("image_folder_is_file", ["data.name=image_folder", "data.root={tmp}/file"], "{tmp}/file"),
    ("image_folder_empty", ["data.name=image_folder", "data.root={tmp}/empty"], "data.root: image_folder found no"),
    ("image_folder_no_images", ["data.name=image_folder", "data.root={tmp}/txt"], "under '{tmp}/txt'"),
    ("image_folder_broken", ["data.name=image_folder", "data.root={tmp}/broken", "data.image_size=8",
                             "net.name=unet", "net.channels=8", "net.channel_mult=[1]", "net.attn_resolutions=[]",
                             "data.batch_size=4"], "data.root: {tmp}/broken/zz.png is not a readable image"),
    ("image_size_type", ["data.name=image_folder", "data.root={tmp}/broken", "data.image_size=big"],
     "data.image_size: got str 'big'"),
    ("cifar_missing", ["data.name=cifar10", "data.root={tmp}/nowhere"], "{tmp}/nowhere"),
    ("devices_zero", ["trainer.devices=0"], "trainer.devices: 0"),
    ("devices_negative", ["trainer.devices=-2"], "trainer.devices: -2"),
    ("devices_empty_list", ["trainer.devices=[]"], "trainer.devices: []"),
    ("devices_word", ["trainer.devices=some"], "trainer.devices: 'some'"),
    ("precision_unknown", ["trainer.precision=17"], "trainer.precision: 17"),
    ("precision_16_on_cpu", ["trainer.precision=16-mixed"], "trainer.precision: '16-mixed'"),
    ("accelerator_unknown", ["trainer.accelerator=tpux"], "trainer.accelerator: 'tpux'"),
    ("max_steps_zero", ["trainer.max_steps=0"], "trainer.max_steps: 0"),
    ("num_nodes_zero", ["trainer.num_nodes=0"], "trainer.num_nodes: 0"),
    ("keep_last_k_zero", ["trainer.keep_last_k=0"], "trainer.keep_last_k: 0"),
    ("checkpoint_every_zero", ["trainer.checkpoint_every_n_steps=0"], "trainer.checkpoint_every_n_steps: 0"),
    ("trainer_unknown_key", ["trainer.max_step=3"], "trainer.max_step: unknown key"),
    ("out_dir_is_file", ["out_dir={tmp}/file"], "out_dir: {tmp}/file exists and is not a directory"),
    ("out_dir_under_file", ["out_dir={tmp}/file/run"], "out_dir: cannot write to {tmp}/file/run"),
    ("out_dir_null", ["out_dir=null"], "out_dir: got null"),
    ("out_dir_blank", ["out_dir=' '"], "out_dir: empty"),
    ("resume_missing", ["trainer.ckpt_path={tmp}/none.ckpt"], "trainer.ckpt_path: no checkpoint to resume from"),
    ("resume_last_missing", ["trainer.ckpt_path=last"], "trainer.ckpt_path: no checkpoint to resume from"),
    ("resume_random_bytes", ["trainer.ckpt_path={junk}"], "trainer.ckpt_path: {junk} is not a torch checkpoint"),
    ("resume_truncated", ["trainer.ckpt_path={cut}"], "trainer.ckpt_path: {cut} is truncated or corrupt"),
    ("resume_crafted", ["trainer.ckpt_path={crafted}"], "trainer.ckpt_path: {crafted} is a pickle holding a "
                                                        "reference to the Python object posix.system; it cannot "
                                                        "be loaded safely"),
    ("resume_foreign", ["trainer.ckpt_path={foreign}"], "trainer.ckpt_path: {foreign} is not a fastdiff checkpoint"),
    ("resume_other_process", ["trainer.ckpt_path={ckpt}", "process.name=ve"],
     "trainer.ckpt_path: {ckpt} was trained with process.name='vp', the config has 've'"),
    ("resume_other_net", ["trainer.ckpt_path={ckpt}", "net.hidden=32"],
     "trainer.ckpt_path: {ckpt} was trained with net.hidden=16, the config has 32"),
    ("resume_other_architecture", ["trainer.ckpt_path={arch}"],
     "trainer.ckpt_path: {arch} holds weights of another architecture (model.net."),
    ("resume_other_process_option", ["trainer.ckpt_path={ckpt}", "process.beta_max=10"],
     "trainer.ckpt_path: {ckpt} was trained with process.beta_max=20.0, the config has 10.0"),
    ("final_sampler_process", ["process.name=psld", "final_samples.n=4", "final_samples.sampler=edm_heun"],
     "final_samples.sampler: 'edm_heun' does not support process PSLD"),
    ("final_sampler_unknown", ["final_samples.n=4", "final_samples.sampler=nope"],
     "final_samples.sampler: unknown sampler 'nope'"),
    ("final_nfe_zero", ["final_samples.n=4", "final_samples.nfe=0"], "final_samples.nfe: 0"),
    ("final_option_rho", ["final_samples.n=4", "final_samples.options={rho: 0}"], "option rho: 0.0"),
    ("final_option_unknown", ["final_samples.n=4", "final_samples.options={bogus: 1}"], "unknown option(s) bogus"),
    ("final_budget_too_small", ["final_samples.n=4", "final_samples.sampler=restart", "final_samples.nfe=3"],
     "NFE budget 3 is below its minimum"),
    ("eval_sampler_process", ["process.name=psld", "evaluation=[{samplers: [{sampler: edm_heun, nfe: 5}], "
                              "every_n_steps: 1}]"], "evaluation[0].samplers[0].sampler: 'edm_heun'"),
    ("eval_no_trigger", ["evaluation=[{samplers: [{sampler: euler_maruyama, nfe: 4}]}]"],
     "evaluation[0]: neither of every_n_steps and every_n_epochs"),
    ("eval_seeds_reversed", ["evaluation=[" + EVAL_OK[:-1] + ", seeds: '5-3'}]"],
     "evaluation[0].seeds: range 5-3"),
    ("eval_seed_count", ["evaluation=[" + EVAL_OK[:-1] + ", seeds: '0-9'}]"],
     "evaluation[0].seeds: '0-9' gives 10 seeds but n_samples is 4"),
    ("eval_n_samples_zero", ["evaluation=[{samplers: [{sampler: euler_maruyama, nfe: 4}], n_samples: 0, "
                             "every_n_steps: 1}]"], "evaluation[0].n_samples: 0"),
    ("eval_unknown_key", ["evaluation=[{bogus: 1}]"], "evaluation[0].bogus: unknown key"),
    ("eval_sampler_unknown_key", ["evaluation=[{samplers: [{sampler: euler_maruyama, nfee: 4}], "
                                  "every_n_steps: 1}]"], "evaluation[0].samplers[0].nfee: unknown key"),
    ("eval_duplicate_name", ["evaluation=[" + EVAL_OK + ", " + EVAL_OK + "]"], "evaluation[1].name: 'val'"),
    ("optim_lr_negative", ["optim.lr=-0.001"], "optim.lr: -0.001"),
    ("optim_betas_length", ["optim.betas=[0.9]"], "optim.betas: got a list of 1 items"),
    ("ema_decay_above_one", ["ema.decay=1.5"], "ema.decay: 1.5"),
    ("model_parameterization", ["process.name=psld", "model.parameterization=edm"],
     "model.parameterization: 'edm'"),
    ("model_sigma_data_zero", ["model.sigma_data=0"], "model.sigma_data: 0.0"),
    ("net_option_type", ["net.hidden=wide"], "net.hidden: got str 'wide'"),
    ("net_reserved", ["net.in_channels=3"], "net.in_channels: int 3"),
    ("top_level_typo", ["optimm.lr=1"], "optimm: unknown key"),
    ("override_without_value", ["optim.lr"], "optim.lr: not an override"),
    ("override_bad_yaml", ["optim.lr=[1"], "optim.lr: cannot parse"),
    ("config_file_missing", ["--config", "{tmp}/none.yaml"], "--config: file not found: {tmp}/none.yaml"),
    ("unknown_flag", ["--bogus"], "--bogus: unknown flag"),
    ("seed_type", ["seed=abc"], "seed: got str 'abc'"),
]


@pytest.mark.parametrize("args,fragment", [c[1:] for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES])
def test_train_bad_input(args, fragment, files, tmp_path, capsys):
    from fastdiff.cli.train import main

    _prepare(tmp_path)
    before = _snapshot(tmp_path)
    renamed = {a.split(".")[0] for a in args if ".name=" in a}  # a section switched to another component
    base = [a for a in TOY if a.split(".")[0] not in renamed or a in ("data.batch_size=16",)]
    argv = base + [f"out_dir={tmp_path}/run"] + _fill(args, tmp_path, files)
    assert main(argv) == 2
    _check_one_line(capsys.readouterr().err, _sub(fragment, tmp_path, files))
    assert _snapshot(tmp_path) == before  # nothing written, not even the out_dir


def test_train_failed_start_leaves_nothing(files, tmp_path, capsys, monkeypatch):
    """Lightning failing as fit starts (after every check passed) removes the out_dir this run created."""
    from lightning.pytorch import Trainer

    from fastdiff.cli.train import main

    def refuse(self, *args, **kwargs):
        raise RuntimeError("the strategy could not start")

    monkeypatch.setattr(Trainer, "fit", refuse)
    assert main(TOY + [f"out_dir={tmp_path}/run"]) == 1  # not the user's input: exit 1, one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: RuntimeError: the strategy could not start"), err
    assert list(tmp_path.iterdir()) == []


def test_train_gpu_accelerator_without_gpu(files, tmp_path, capsys):
    from fastdiff.cli.train import main

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    assert main(TOY + [f"out_dir={tmp_path}/run", "trainer.accelerator=gpu"]) == 2
    _check_one_line(capsys.readouterr().err, "trainer.accelerator: 'gpu' but no CUDA GPU")
    assert not (tmp_path / "run").exists()


# ---- stats / FID commands -------------------------------------------------------------------------------------
STATS_CASES = [
    ("data_missing", ["--features", "raw", "--out", "{tmp}/r.npz"], "the following arguments are required: --data"),
    ("features_unknown", ["--data", "toy2d", "--features", "nope", "--out", "{tmp}/r.npz"],
     "argument --features: invalid choice: 'nope'"),
    ("batch_size_word", ["--data", "toy2d", "--features", "raw", "--out", "{tmp}/r.npz", "--batch-size", "x"],
     "argument --batch-size: invalid int value: 'x'"),
    ("batch_size_zero", ["--data", "toy2d", "--features", "raw", "--out", "{tmp}/r.npz", "--batch-size", "0"],
     "--batch-size: 0 is out of range"),
    ("keep_features_negative", ["--data", "toy2d", "--features", "raw", "--out", "{tmp}/r.npz",
                                "--keep-features", "-1"], "--keep-features: -1 is out of range"),
    ("max_items_zero", ["--data", "toy2d", "--features", "raw", "--out", "{tmp}/r.npz", "--max-items", "0"],
     "--max-items: 0 is out of range"),
    ("out_not_npz", ["--data", "toy2d", "--features", "raw", "--out", "{tmp}/r.txt"], "--out: '{tmp}/r.txt'"),
    ("out_is_dir", ["--data", "toy2d", "--features", "raw", "--out", "{tmp}/empty.npz"], "--out: {tmp}/empty.npz"),
    ("out_under_file", ["--data", "toy2d", "--features", "raw", "--out", "{tmp}/file/r.npz"],
     "--out: {tmp}/file exists and is not a directory"),
    ("data_unknown", ["--data", "mnist", "--features", "raw", "--out", "{tmp}/r.npz"], "unknown dataset 'mnist'"),
    ("data_option_malformed", ["--data", "toy2d", "--data-option", "n", "--features", "raw", "--out",
                               "{tmp}/r.npz"], "--data-option 'n': expected key=value"),
]


@pytest.mark.parametrize("argv,fragment", [c[1:] for c in STATS_CASES], ids=[c[0] for c in STATS_CASES])
def test_stats_bad_input(argv, fragment, tmp_path, capsys):
    from fastdiff.cli.stats import main

    _prepare(tmp_path)
    (tmp_path / "empty.npz").mkdir()
    before = _snapshot(tmp_path)
    assert main(_fill(argv, tmp_path, {})) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and _sub(fragment, tmp_path, {}) in lines[0], lines
    assert _snapshot(tmp_path) == before


FID_CASES = [
    ("a_missing", ["{tmp}/none", "{tmp}/broken"], "{tmp}/none"),
    ("b_missing", ["{tmp}/broken", "{tmp}/none.npz"], "{tmp}/none.npz"),
    ("folder_without_images", ["{tmp}/txt", "{tmp}/broken"], "{tmp}/txt holds no images"),
    ("empty_folder", ["{tmp}/empty", "{tmp}/broken"], "{tmp}/empty holds no images"),
    ("corrupt_npz", ["{tmp}/shards/shard_000000-000003.npz", "{tmp}/broken"], "is not a readable .npz"),
    ("plain_file", ["{tmp}/file", "{tmp}/broken"], "{tmp}/file"),
    ("batch_size_zero", ["{tmp}/broken", "{tmp}/broken", "--batch-size", "0"], "--batch-size must be a positive"),
    ("unknown_flag", ["{tmp}/broken", "{tmp}/broken", "--bogus"], "unrecognized arguments: --bogus"),
    ("weights_choice", ["{tmp}/broken", "{tmp}/broken", "--weights", "mine"], "argument --weights: invalid choice"),
    ("one_input", ["{tmp}/broken"], "the following arguments are required: b"),
]


@pytest.mark.parametrize("argv,fragment", [c[1:] for c in FID_CASES], ids=[c[0] for c in FID_CASES])
def test_fid_bad_input(argv, fragment, tmp_path, capsys):
    """``python -m fastdiff.cli.fid A B``: bad inputs are found before the network is built, one line, exit 2."""
    fid = pytest.importorskip("fastdiff.cli.fid")
    _prepare(tmp_path)
    before = _snapshot(tmp_path)
    try:
        code = fid.main(_fill(argv, tmp_path, {}))
    except SystemExit as exit_:  # its argparse errors print one line and exit(2) directly
        code = exit_.code
    assert code == 2
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and _sub(fragment, tmp_path, {}) in lines[0], lines
    assert _snapshot(tmp_path) == before


# ---- real processes: exit status, no traceback, the debug switch ----------------------------------------------
def _run(script: str, argv: list[str], env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    env.pop("FASTDIFF_DEBUG", None) if not env_extra else None
    return subprocess.run([sys.executable, str(ROOT / script), *argv], capture_output=True, text=True, env=env,
                          timeout=300)


def test_subprocess_train_bad_process_range(tmp_path):
    proc = _run("train.py", ["process.name=ve", "process.sigma_min=-1", f"out_dir={tmp_path}/run"])
    assert proc.returncode == 2 and proc.stdout == ""
    _check_one_line(proc.stderr, "process.sigma_min: -1.0 is out of range")
    assert list(tmp_path.iterdir()) == []


def test_subprocess_sample_missing_checkpoint_without_torch(tmp_path):
    """Answered from the arguments alone: the process exits 2 before importing torch or Lightning."""
    code = ("import sys; from fastdiff.cli.sample import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, 'imported torch'; sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("FASTDIFF_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", code, f"ckpt={tmp_path}/none.ckpt", "sampler=edm_heun", "nfe=5",
                           "seeds=0-9", f"out={tmp_path}/o"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    _check_one_line(proc.stderr, f"ckpt: checkpoint not found: {tmp_path}/none.ckpt")
    assert list(tmp_path.iterdir()) == []


def test_subprocess_debug_switch_shows_the_traceback(tmp_path):
    proc = _run("train.py", ["process.beta_min=0", f"out_dir={tmp_path}/run"], {"FASTDIFF_DEBUG": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "process.beta_min: 0.0" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["train", "sample"])
def test_out_dir_not_writable(command, files, tmp_path, capsys, monkeypatch):
    """A directory without write permission (simulated: the suite may run as root, for whom every dir is
    writable) is refused before anything is written."""
    import fastdiff.schema.preflight as preflight

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(preflight.os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    if command == "train":
        from fastdiff.cli.train import main

        rc = main(TOY + [f"out_dir={locked}/run"])
        key = "out_dir"
    else:
        from fastdiff.cli.sample import main

        rc = main(_fill([f"{k}={v}" for k, v in {**SAMPLE_BASE, "out": str(locked / "o")}.items()], tmp_path, files))
        key = "out"
    assert rc == 2
    _check_one_line(capsys.readouterr().err, f"{key}: cannot write to {locked}/")
    assert list(locked.iterdir()) == []


def test_debug_flag_raises_instead_of_one_line(tmp_path):
    """``--debug`` (like FASTDIFF_DEBUG=1) lets the exception through, traceback and all."""
    from fastdiff.cli.train import main
    from fastdiff.config import ConfigError

    with pytest.raises(ConfigError, match=r"^process\.beta_min: 0\.0 is out of range"):
        main(["--debug", "process.beta_min=0", f"out_dir={tmp_path}/run"])
    assert list(tmp_path.iterdir()) == []
