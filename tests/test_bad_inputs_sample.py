"""Every bad input a user can give sample.py and ``fastdiff.sample``: one ``error:`` line naming the key and value
with exit status 2 (the API: the right exception type and a one-line message), found before any work, nothing
written (no out dir, no generation.json). Tables and placeholders as in test_bad_inputs.py."""
from __future__ import annotations

import pytest
import torch
from bad_input_helpers import SAMPLE_BASE, files, _check_one_line, _fill, _prepare, _snapshot, _sub  # noqa: F401


# ---- sample.py ------------------------------------------------------------------------------------------------
SAMPLE_CASES = [
    ("ckpt_missing", {"ckpt": "{tmp}/none.ckpt"}, "ckpt: checkpoint not found: {tmp}/none.ckpt"),
    ("ckpt_random_bytes", {"ckpt": "{junk}"}, "ckpt: {junk} is not a torch checkpoint"),
    ("ckpt_truncated", {"ckpt": "{cut}"}, "ckpt: {cut} is truncated or corrupt"),
    ("ckpt_crafted", {"ckpt": "{crafted}"}, "ckpt: {crafted} is a pickle holding a reference to the Python "
                                            "object posix.system; it cannot be loaded safely"),
    ("ckpt_directory", {"ckpt": "{ckptdir}"}, "ckpt: checkpoint path is a directory"),
    ("ckpt_foreign", {"ckpt": "{foreign}"}, "ckpt: {foreign} is not a fastdiff checkpoint"),
    ("ckpt_other_architecture", {"ckpt": "{arch}"}, "ckpt: {arch} does not match the model built from its config"),
    ("seeds_reversed", {"seeds": "5-3"}, "seeds: range 5-3 in '5-3' ends below its start"),
    ("seeds_huge", {"seeds": "0-99999999999"}, "seeds: '0-99999999999' names 100000000000 seeds"),
    ("seeds_duplicate", {"seeds": "1,1"}, "seeds: '1,1' lists seed 1 more than once"),
    ("seeds_overlap", {"seeds": "0-5,3"}, "seeds: '0-5,3' lists seed 3 more than once"),
    ("seeds_words", {"seeds": "abc"}, "seeds: malformed seed list 'abc'"),
    ("seeds_negative_list", {"seeds": "[1, -2]"}, "seeds: item -2 of [1, -2]"),
    ("nfe_zero", {"nfe": "0"}, "nfe: 0 is out of range"),
    ("nfe_word", {"nfe": "many"}, "nfe: got str 'many'"),
    ("nfe_below_minimum", {"sampler": "restart", "nfe": "5"}, "NFE budget 5 is below its minimum"),
    ("nfe_and_steps", {"steps": "3"}, "steps: given with nfe=4"),
    ("steps_zero", {"nfe": None, "steps": "0"}, "steps: 0 is out of range"),
    ("nfe_missing", {"nfe": None}, "nfe: required for sampler 'euler_maruyama'"),
    ("batch_zero", {"batch": "0"}, "batch: 0 is out of range"),
    ("ema_word", {"ema": "maybe"}, "ema: got str 'maybe'"),
    ("sampler_unknown", {"sampler": "nope"}, "sampler: unknown sampler 'nope'"),
    ("sampler_process", {"ckpt": "{psld}", "sampler": "edm_heun"},
     "sampler: sampler 'edm_heun' does not support process PSLD"),
    ("option_sigma_min_negative", {"sampler": "edm_heun", "options.sigma_min": "-1"},
     "option sigma_min: -1.0 is out of range"),
    ("option_sigma_min_above_max", {"sampler": "edm_heun", "options.sigma_min": "10", "options.sigma_max": "1"},
     "option sigma_min: 10.0 is not below sigma_max=1.0"),
    ("option_rho_zero", {"sampler": "edm_heun", "options.rho": "0"}, "option rho: 0.0 is out of range"),
    ("option_rho_negative", {"options.rho": "-2"}, "option rho: -2.0 is out of range"),
    ("option_t_eps", {"options.t_eps": "1.5"}, "option t_eps: 1.5 is out of range"),
    ("option_dtype", {"options.dtype": "float16"}, "option dtype: 'float16' is not allowed"),
    ("option_unknown", {"options.foo": "1"}, "unknown option(s) foo for sampler 'euler_maruyama'"),
    ("devices_zero", {"trainer.devices": "0"}, "trainer.devices: 0"),
    ("num_nodes_zero", {"trainer.num_nodes": "0"}, "trainer.num_nodes: 0"),
    ("accelerator_unknown", {"trainer.accelerator": "npu"}, "trainer.accelerator: 'npu'"),
    ("trainer_unknown_key", {"trainer.max_steps": "5"}, "trainer.max_steps: unknown key"),
    ("out_is_file", {"out": "{tmp}/file"}, "out: {tmp}/file exists and is not a directory"),
    ("out_under_file", {"out": "{tmp}/file/o"}, "out: cannot write to {tmp}/file/o"),
    ("out_missing", {"out": None}, "out: missing"),
    ("out_corrupt_shard", {"out": "{tmp}/shards"}, "out: {tmp}/shards/shard_000000-000003.npz is not a readable"),
    ("fid_ref_missing", {"fid.ref": "{tmp}/none.npz"}, "fid.ref: reference statistics {tmp}/none.npz not found"),
    ("fid_options_without_ref", {"fid.options.batch_size": "4"}, "fid.options: given without fid.ref"),
    ("unknown_key", {"nfee": "5"}, "nfee: unknown key"),
]


@pytest.mark.parametrize("change,fragment", [c[1:] for c in SAMPLE_CASES], ids=[c[0] for c in SAMPLE_CASES])
def test_sample_bad_input(change, fragment, files, tmp_path, capsys):
    from fastdiff.cli.sample import main

    _prepare(tmp_path)
    before = _snapshot(tmp_path)
    args = {**SAMPLE_BASE, **change}
    argv = _fill([f"{k}={v}" for k, v in args.items() if v is not None], tmp_path, files)
    assert main(argv) == 2
    _check_one_line(capsys.readouterr().err, _sub(fragment, tmp_path, files))
    assert _snapshot(tmp_path) == before  # no out dir, no generation.json, the bad shard untouched


def test_sample_gpu_accelerator_without_gpu(files, tmp_path, capsys):
    from fastdiff.cli.sample import main

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    args = {**SAMPLE_BASE, "trainer.accelerator": "gpu"}
    assert main(_fill([f"{k}={v}" for k, v in args.items()], tmp_path, files)) == 2
    _check_one_line(capsys.readouterr().err, "trainer.accelerator: 'gpu' but no CUDA GPU")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv,fragment", [(["nfe"], "nfe: not a key=value argument"),
                                           (["--fast"], "--fast: not a key=value argument")])
def test_sample_malformed_arguments(argv, fragment, tmp_path, capsys):
    from fastdiff.cli.sample import main

    assert main(argv) == 2
    _check_one_line(capsys.readouterr().err, fragment)
    assert list(tmp_path.iterdir()) == []


def test_sample_other_generation_is_refused(files, tmp_path, capsys):
    """A directory filled by another sampler is not resumed into; nothing in it changes."""
    from fastdiff.cli.sample import main

    argv = _fill([f"{k}={v}" for k, v in SAMPLE_BASE.items()], tmp_path, files)
    assert main(argv) == 0
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "o").rglob("*")}
    assert main([a if not a.startswith("nfe=") else "nfe=6" for a in argv]) == 2
    _check_one_line(capsys.readouterr().err, "out: " + str(tmp_path / "o") + " holds samples of a different generation")
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "o").rglob("*")} == before


def test_sample_failed_start_leaves_nothing(files, tmp_path, capsys, monkeypatch):
    """A failure after the checks (here: Lightning refusing to start) removes the out dir it created."""
    import fastdiff.cli.sample as cli

    def refuse(p):
        raise RuntimeError("the trainer could not start")

    monkeypatch.setattr(cli, "run", refuse)
    argv = _fill([f"{k}={v}" for k, v in SAMPLE_BASE.items()], tmp_path, files)
    assert cli.main(argv) == 1  # not the user's input: exit 1, still one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: RuntimeError: the trainer could not start"), err
    assert not (tmp_path / "o").exists()


# ---- Python API -----------------------------------------------------------------------------------------------
API_CASES = [
    ("seeds_reversed", {"seeds": "5-3"}, ValueError, "sample(): seeds: range 5-3 in '5-3' ends below its start"),
    ("seeds_huge", {"seeds": "0-99999999999"}, ValueError, "names 100000000000 seeds"),
    ("seeds_duplicate_list", {"seeds": [1, 2, 1]}, ValueError, "lists seed 1 more than once"),
    ("seeds_duplicate_string", {"seeds": "0-3,2"}, ValueError, "lists seed 2 more than once"),
    ("seeds_empty", {"seeds": []}, ValueError, "seeds is empty"),
    ("seeds_negative", {"seeds": -1}, ValueError, "seed -1 is negative"),
    ("seeds_float", {"seeds": 2.5}, ValueError, "2.5 is not a seed list"),
    ("seeds_bool_item", {"seeds": [0, True]}, ValueError, "item True of [0, True]"),
    ("batch_size_zero", {"batch_size": 0}, ValueError, "batch_size must be a positive integer, got 0"),
    ("sampler_unknown", {"sampler": "nope"}, KeyError, "unknown sampler 'nope'"),
    ("sigma_min_negative", {"sampler": "edm_heun", "sigma_min": -1.0}, ValueError, "option sigma_min: -1.0"),
    ("sigma_min_above_max", {"sampler": "edm_heun", "sigma_min": 5.0, "sigma_max": 1.0}, ValueError,
     "option sigma_min: 5.0 is not below sigma_max=1.0"),
    ("rho_zero", {"sampler": "edm_heun", "rho": 0.0}, ValueError, "option rho: 0.0"),
    ("rho_negative", {"sampler": "euler_maruyama", "rho": -3.0}, ValueError, "option rho: -3.0"),
    ("t_eps_zero", {"sampler": "euler_maruyama", "t_eps": 0.0}, ValueError, "option t_eps: 0.0"),
    ("nfe_zero", {"nfe": 0}, ValueError, "NFE budget 0 is below its minimum"),
    ("option_unknown", {"bogus": 1}, TypeError, "unknown option(s) bogus"),
    ("option_type", {"sampler": "edm_heun", "rho": "seven"}, ValueError, "option rho: got str 'seven'"),
    ("ckpt_missing", {"model_or_checkpoint": "{tmp}/none.ckpt"}, FileNotFoundError, "checkpoint not found"),
    ("ckpt_crafted", {"model_or_checkpoint": "{crafted}"}, ValueError, "it cannot be loaded safely"),
    ("ckpt_random", {"model_or_checkpoint": "{junk}"}, ValueError, "is not a torch checkpoint"),
    ("sampler_process", {"model_or_checkpoint": "{psld}", "sampler": "edm_heun"}, ValueError,
     "does not support process PSLD"),
    ("shape_mismatch", {"shape": (3,)}, ValueError, "shape=(3,) does not match the checkpoint's data shape (2,)"),
]


@pytest.mark.parametrize("kwargs,exc,fragment", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_bad_input(kwargs, exc, fragment, files, tmp_path):
    import fastdiff

    kwargs = {k: (_sub(v, tmp_path, files) if isinstance(v, str) else v) for k, v in kwargs.items()}
    target = kwargs.pop("model_or_checkpoint", files["ckpt"])
    with pytest.raises(exc) as info:
        fastdiff.sample(target, **{"nfe": 4, "seeds": range(2), "sampler": "euler_maruyama", **kwargs})
    text = str(info.value).strip("'\"")
    assert fragment in text and "\n" not in text and "weights_only" not in text, text
    assert list(tmp_path.iterdir()) == []


def test_api_string_seeds_follow_the_cli_grammar(files):
    """seeds="10" is seed 10 (not the characters '1', '0'); "0,5" is two seeds: the grammar of sample.py."""
    import fastdiff

    assert fastdiff.sample(files["ckpt"], sampler="euler_maruyama", nfe=4, seeds="10").seeds == [10]
    assert fastdiff.sample(files["ckpt"], sampler="euler_maruyama", nfe=4, seeds="0,5").seeds == [0, 5]
