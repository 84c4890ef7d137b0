"""Shared inputs and checks of the bad-input suites (test_bad_inputs.py: train.py, stats, fid, processes;
test_bad_inputs_sample.py: sample.py and the Python API)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TOY = ["data.name=toy2d", "data.n=200", "data.batch_size=16", "net.name=mlp", "net.hidden=16", "net.depth=1",
       "net.emb_dim=8", "trainer.max_steps=2", "trainer.accelerator=cpu", "final_samples.n=0", "evaluation=[]"]
EVAL_OK = "{samplers: [{sampler: euler_maruyama, nfe: 4}], n_samples: 4, batch_size: 4, every_n_steps: 1}"


class Evil:
    """Unpickling this would run code (a crafted checkpoint)."""

    def __reduce__(self):
        return (os.system, ("echo crafted-pickle-ran",))


def _save_module_checkpoint(path: Path, overrides: list[str], shape: tuple[int, ...] = (2,)) -> str:
    """A checkpoint in the layout DiffusionModule writes (state_dict + hyper_parameters), without training."""
    from fastdiff.config import load_config
    from fastdiff.lightning.module import DiffusionModule

    module = DiffusionModule(load_config(None, TOY + overrides), shape)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("inputs")
    out = {"ckpt": _save_module_checkpoint(root / "vp.ckpt", []),
           "psld": _save_module_checkpoint(root / "psld.ckpt", ["process.name=psld"])}
    good = torch.load(out["ckpt"], weights_only=True)
    good["state_dict"]["model.net.extra"] = good["state_dict"].pop(next(iter(good["state_dict"])))
    torch.save(good, root / "arch.ckpt")
    torch.save({"state_dict": {}, "obj": Evil()}, root / "crafted.ckpt")
    torch.save({"state_dict": {"w": torch.zeros(1)}}, root / "foreign.ckpt")
    (root / "junk.ckpt").write_bytes(os.urandom(4096))
    blob = Path(out["ckpt"]).read_bytes()
    (root / "cut.ckpt").write_bytes(blob[:len(blob) // 2])
    (root / "ckptdir").mkdir()
    out.update({k: str(root / f"{k}.ckpt") for k in ("arch", "crafted", "foreign", "junk", "cut")})
    out["ckptdir"] = str(root / "ckptdir")
    return out


def _prepare(tmp: Path) -> None:
    """Inputs some cases point at: a plain file, image folders (empty, no images, one broken image), a bad shard."""
    from PIL import Image

    (tmp / "file").write_text("not a directory")
    (tmp / "empty").mkdir()
    (tmp / "txt").mkdir()
    (tmp / "txt" / "a.txt").write_text("x")
    (tmp / "broken").mkdir()
    for i in range(20):
        Image.new("RGB", (8, 8), (i, 2 * i, 3 * i)).save(tmp / "broken" / f"{i:02d}.png")
    (tmp / "broken" / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (tmp / "shards").mkdir()
    (tmp / "shards" / "shard_000000-000003.npz").write_bytes(b"not an npz archive")


def _sub(text: str, tmp: Path, files: dict[str, str]) -> str:
    """Fill {tmp} and {<fixture file>} placeholders (other braces are YAML and stay)."""
    for key, value in {"tmp": str(tmp), **files}.items():
        text = text.replace("{" + key + "}", value)
    return text


def _fill(args: list[str], tmp: Path, files: dict[str, str]) -> list[str]:
    return [_sub(a, tmp, files) for a in args]


def _snapshot(tmp: Path) -> set[str]:
    return {str(p.relative_to(tmp)) for p in tmp.rglob("*")}


# messages written in sampler budget code (samplers/base.py, restart.py; not this layer's files) have no " — " yet
NO_DASH = ("NFE budget",)


def _check_one_line(err: str, fragment: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and (" — " in lines[0] or any(s in lines[0] for s in NO_DASH)), lines[0]
    assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in err and "weights_only=False" not in err and "set to `False`" not in err


SAMPLE_BASE = {"ckpt": "{ckpt}", "sampler": "euler_maruyama", "nfe": "4", "seeds": "0-3", "out": "{tmp}/o",
               "ema": "false", "progress": "false", "trainer.accelerator": "cpu"}
