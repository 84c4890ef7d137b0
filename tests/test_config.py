"""Config loading: defaults, YAML files, dotlist overrides, one-line errors naming the key, YAML round trip."""
from __future__ import annotations

import dataclasses
import glob
import inspect
import os

import pytest

from fastdiff.cli import split_cli_args
from fastdiff.config import ConfigError, config_to_yaml, load_config
from fastdiff.processes import PSLD, VE, VP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
EXPECTED_CONFIGS = {f"{d}_{p}.yaml" for d in ("digits", "toy2d", "cifar10") for p in ("vp", "ve", "psld")}


def test_defaults_are_the_spec_default_job():
    cfg = load_config(None, [])
    assert cfg["seed"] == 0 and cfg["out_dir"] == "runs/digits_vp"
    assert cfg["process"]["name"] == "vp"
    assert cfg["net"]["name"] == "unet" and cfg["net"]["channel_mult"] == [1, 2]
    assert cfg["data"]["name"] == "digits" and cfg["data"]["batch_size"] == 128
    assert cfg["optim"] == {"lr": 2.0e-4, "warmup_steps": 200, "grad_clip": 1.0, "weight_decay": 0.0,
                            "betas": [0.9, 0.999], "eps": 1.0e-8}
    assert cfg["ema"] == {"decay": 0.999, "warmup": True}
    assert cfg["final_samples"] == {"sampler": "euler_maruyama", "nfe": 200, "n": 64, "options": {}}
    assert cfg["trainer"]["ckpt_path"] is None
    # the default job attaches validation sampling with edm_heun, restart, ggf and euler_maruyama (issue 7)
    (ev,) = cfg["evaluation"]
    assert [s["sampler"] for s in ev["samplers"]] == ["edm_heun", "restart", "ggf", "euler_maruyama"]
    assert load_config(os.path.join(ROOT, "configs", "toy2d_vp.yaml"), [])["evaluation"] == []
    assert load_config(None, ["data.name=toy2d"])["evaluation"] == []  # its metrics are digits-only
    assert load_config(None, ["evaluation=[]"])["evaluation"] == []
    # registry sections are filled with the registered class's own defaults (independent source: the dataclass)
    vp_defaults = {f.name: f.default for f in dataclasses.fields(VP) if f.init}
    assert {k: v for k, v in cfg["process"].items() if k != "name"} == vp_defaults


def _primitives_only(obj) -> bool:
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _primitives_only(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_primitives_only(v) for v in obj)
    return obj is None or isinstance(obj, (bool, int, float, str))


def test_every_config_file_is_present():
    assert {os.path.basename(p) for p in CONFIGS} >= EXPECTED_CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_file_validates(path):
    cfg = load_config(path, [])
    assert _primitives_only(cfg)
    dataset, process = os.path.basename(path)[:-5].split("_")
    assert cfg["data"]["name"] == dataset and cfg["process"]["name"] == process
    assert cfg["net"]["name"] == ("mlp" if dataset == "toy2d" else "unet")


def test_digits_vp_file_is_the_default_job():
    cfg = load_config(os.path.join(ROOT, "configs", "digits_vp.yaml"), [])
    default = load_config(None, [])
    assert {**cfg, "out_dir": None} == {**default, "out_dir": None}


def test_overrides_apply_with_types():
    cfg = load_config(None, ["optim.lr=1e-3", "optim.warmup_steps=10", "net.channel_mult=[1,2,2]", "seed=7",
                             "trainer.devices=[0,1]", "trainer.precision=bf16-mixed", "ema.warmup=false",
                             "final_samples.options={dtype: float64}", "trainer.ckpt_path=last"])
    assert cfg["optim"]["lr"] == 1e-3 and isinstance(cfg["optim"]["lr"], float)
    assert cfg["optim"]["warmup_steps"] == 10 and cfg["seed"] == 7
    assert cfg["net"]["channel_mult"] == [1, 2, 2]
    assert cfg["trainer"]["devices"] == [0, 1] and cfg["trainer"]["precision"] == "bf16-mixed"
    assert cfg["ema"]["warmup"] is False and cfg["trainer"]["ckpt_path"] == "last"
    assert cfg["final_samples"]["options"] == {"dtype": "float64"}


def test_int_accepted_for_float_and_converted():
    cfg = load_config(None, ["optim.lr=1", "process.beta_max=15"])
    assert cfg["optim"]["lr"] == 1.0 and type(cfg["optim"]["lr"]) is float
    assert cfg["process"]["beta_max"] == 15.0 and type(cfg["process"]["beta_max"]) is float


def test_union_keeps_int_and_str():
    assert load_config(None, ["trainer.precision=16"])["trainer"]["precision"] == 16
    assert load_config(None, ["trainer.devices=auto"])["trainer"]["devices"] == "auto"


def test_later_overrides_win_and_file_beats_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: {lr: 0.5}\ntrainer: {max_steps: 7}\n")
    cfg = load_config(str(path), ["optim.lr=0.25", "optim.lr=0.125"])
    assert cfg["optim"]["lr"] == 0.125 and cfg["trainer"]["max_steps"] == 7
    assert cfg["trainer"]["log_every_n_steps"] == load_config(None, [])["trainer"]["log_every_n_steps"]


def test_changing_a_registry_name_drops_the_previous_options():
    # the default net is a U-Net with channels/channel_mult/...; switching to the MLP must not carry them over
    cfg = load_config(None, ["net.name=mlp", "net.hidden=64", "data.name=toy2d", "process.name=ve"])
    from fastdiff.nets import MLP

    mlp_params = [k for k in inspect.signature(MLP).parameters if k not in ("in_channels", "out_channels")]
    assert sorted(k for k in cfg["net"] if k != "name") == sorted(mlp_params)
    assert cfg["net"]["hidden"] == 64
    assert cfg["process"] == {"name": "ve", **{f.name: f.default for f in dataclasses.fields(VE) if f.init}}


def test_psld_options_and_parameterization_per_process():
    cfg = load_config(None, ["process.name=psld", "process.beta=4"])
    assert cfg["process"]["beta"] == 4.0 and cfg["process"]["kappa"] == PSLD().kappa
    assert load_config(None, ["model.parameterization=edm"])["model"]["parameterization"] == "edm"


def test_interpolation_is_resolved():
    cfg = load_config(None, ["process.name=ve", "out_dir=runs/${process.name}_${seed}"])
    assert cfg["out_dir"] == "runs/ve_0"


ERROR_CASES = [
    (["optim.lrr=1"], "optim.lrr: unknown key — allowed: lr, warmup_steps, grad_clip"),
    (["optimm.lr=1"], "optimm: unknown key — allowed: seed, out_dir"),
    (["optim.lr=abc"], "optim.lr: got str 'abc' — expected float"),
    (["trainer.max_steps=1.5"], "trainer.max_steps: got float 1.5 — expected int"),
    (["ema.warmup=3"], "ema.warmup: got int 3 — expected bool"),
    (["seed=true"], "seed: got bool True — expected int"),
    (["optim=3"], "optim: got int 3 — expected a mapping"),
    (["trainer.max_steps=0"], "trainer.max_steps: 0 is out of range — must be >= 1"),
    (["ema.decay=1.0"], "ema.decay: 1.0 is out of range — must be < 1"),
    (["process.name=vpp"], "process.name: unknown process 'vpp' — registered: "),
    (["net.name=resnet"], "net.name: unknown net 'resnet' — registered: "),
    (["data.name=mnist"], "data.name: unknown dataset 'mnist' — registered:"),
    (["net.chanels=16"], "net.chanels: unknown option for net 'unet' — allowed: channels, channel_mult"),
    (["process.sigma_max=5"], "process.sigma_max: unknown option for process 'vp' — allowed: beta_min, beta_max"),
    (["process.beta_min=abc"], "process.beta_min: got str 'abc' — expected float"),
    (["net.channel_mult=3"], "net.channel_mult: got int 3 — expected a list"),
    (["net.in_channels=3"], "net.in_channels: int 3 given — set automatically from the data shape"),
    (["data.split=val"], "data.split: str 'val' given — chosen by the data module"),
    (["data.name=cifar10"], "data.root: missing — a required option of dataset 'cifar10'"),
    (["process.name=psld", "model.parameterization=edm"],
     "model.parameterization: 'edm' is not supported by process 'psld' — allowed: eps"),
    (["final_samples.sampler=nope"], "final_samples.sampler: unknown sampler 'nope' — registered:"),
    (["final_samples.options={bogus: 1}"], "final_samples: unknown option(s) bogus"),
    (["evaluation=3"], "evaluation: got int 3 — expected a list"),
    (["optim.lr"], "optim.lr: not an override — write key=value"),
    (["out_dir=${nope}"], "out_dir:"),
]


@pytest.mark.parametrize("overrides,message", ERROR_CASES, ids=[c[0][-1] for c in ERROR_CASES])
def test_errors_are_one_line_and_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text


@pytest.mark.parametrize("section", ["process", "net", "data"])
def test_unknown_name_lists_every_registered_name(section):
    from fastdiff import registry

    table = {"process": registry.PROCESSES, "net": registry.NETS, "data": registry.DATASETS}[section]
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"{section}.name=nope"])
    listed = str(info.value).split("registered: ")[1].split(", ")
    assert listed == table.names() and {"vp", "ve", "psld", "unet", "mlp", "digits", "toy2d"} & set(listed)


def test_missing_file_is_an_error(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"^--config: file not found: .*nope\.yaml — give an existing YAML file$"):
        load_config(missing, [])


def test_file_errors_name_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"^optim\.lrr: unknown key"):
        load_config(str(path), [])
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(str(path), [])


@pytest.mark.parametrize("path", [None] + CONFIGS, ids=lambda p: os.path.basename(p) if p else "defaults")
def test_yaml_round_trip(path, tmp_path):
    cfg = load_config(path, ["final_samples.options={dtype: float64}", "evaluation=[{every_n_steps: 5, samplers: [{sampler: euler_maruyama, nfe: [10, 20]}]}]"])
    out = tmp_path / "config.yaml"
    out.write_text(config_to_yaml(cfg))
    assert load_config(str(out), []) == cfg


def test_split_cli_args():
    assert split_cli_args(["--config", "a.yaml", "x=1", "y.z=2"]) == ("a.yaml", ["x=1", "y.z=2"])
    assert split_cli_args(["x=1", "--config=b.yaml"]) == ("b.yaml", ["x=1"])
    assert split_cli_args([]) == (None, [])
    with pytest.raises(ConfigError, match=r"^--cfg: unknown flag"):
        split_cli_args(["--cfg", "a.yaml"])
    with pytest.raises(ConfigError, match=r"^--config: expects a file path"):
        split_cli_args(["--config"])


def test_overrides_survive_a_later_section_name():
    """``data.batch_size=8 data.name=toy2d``: the name is chosen first, then every data.* override applies (the 8
    used to be dropped silently when the name changed after it)."""
    cfg = load_config(None, ["data.batch_size=8", "data.name=toy2d", "data.n=300"])
    assert cfg["data"]["name"] == "toy2d" and cfg["data"]["batch_size"] == 8 and cfg["data"]["n"] == 300
    cfg = load_config(None, ["net.hidden=48", "net.name=mlp"])
    assert cfg["net"]["hidden"] == 48
    # an option the new component does not take is an error naming it, not silently dropped
    with pytest.raises(ConfigError, match=r"^data\.pad_to: unknown option for dataset 'toy2d'"):
        load_config(None, ["data.pad_to=16", "data.name=toy2d"])


def test_default_evaluation_keeps_the_samplers_of_the_process():
    """The embedded job's evaluation lists EDM-view samplers; under PSLD only the ones that support it remain."""
    from fastdiff.registry import PROCESSES, SAMPLERS
    from fastdiff.samplers.base import cls_supports

    for process in ("vp", "ve", "psld"):
        (ev,) = load_config(None, [f"process.name={process}"])["evaluation"]
        names = [e["sampler"] for e in ev["samplers"]]
        assert names and all(cls_supports(SAMPLERS.get(n), PROCESSES.get(process)) for n in names)
        assert ("edm_heun" in names) == (process != "psld")


def test_typed_sections_reach_the_module():
    """DiffusionModule reads typed OptimConfig / ModelConfig (defaults from the one schema)."""
    from fastdiff.lightning.module import DiffusionModule
    from fastdiff.schema import ModelConfig, OptimConfig

    cfg = load_config(None, ["data.name=toy2d", "net.name=mlp", "optim.lr=1e-3", "model.P_std=2"])
    module = DiffusionModule(cfg, (2,))
    assert isinstance(module.optim_cfg, OptimConfig) and module.optim_cfg.lr == 1e-3
    assert isinstance(module.model_cfg, ModelConfig) and module.model_cfg.P_std == 2.0
    assert module.model_cfg.P_mean == ModelConfig().P_mean == -1.2
    with pytest.raises(ConfigError, match=r"^optim\.lrr: unknown key"):
        DiffusionModule({**cfg, "optim": {"lrr": 1}}, (2,))


def test_keep_last_k():
    assert load_config(None, [])["trainer"]["keep_last_k"] == 3
    assert load_config(None, ["trainer.keep_last_k=null"])["trainer"]["keep_last_k"] is None
