"""Tests of fastdiff.nets: shapes, gradient flow, conditioning, embeddings (closed forms), errors, a small fit."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fastdiff.nets import MLP, UNet, count_parameters, get_net, list_nets
from fastdiff.nets.embeddings import FourierEmbedding, NoiseEmbedding, PositionalEmbedding
from fastdiff.nets.unet import num_groups
from fastdiff.registry import NETS, UnknownNameError

DIGITS = dict(image_size=8, channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,))


def perturb_(net: nn.Module, seed: int = 0) -> nn.Module:
    """Add noise to every parameter so zero-initialised layers no longer hide the rest of the network."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return net


def small_nets() -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    return [
        ("mlp", MLP(in_channels=2, hidden=32, depth=2, emb_dim=16), (5, 2)),
        ("mlp-fourier", MLP(in_channels=4, hidden=32, depth=2, emb_dim=16, embedding_type="fourier"), (5, 4)),
        ("unet-digits", UNet(in_channels=1, **DIGITS), (3, 1, 8, 8)),
        ("unet-psld", UNet(in_channels=2, out_channels=2, embedding_type="fourier", scale_shift=True, **DIGITS),
         (3, 2, 8, 8)),
    ]


# ---------------------------------------------------------------- registry, shapes, dtypes
def test_registered_and_get_net() -> None:
    assert NETS.get("mlp") is MLP and NETS.get("unet") is UNet
    assert {"mlp", "unet"} <= set(list_nets())
    net = get_net("unet", in_channels=2, out_channels=2, channel_mult=[1, 2], attn_resolutions=[4],
                  image_size=8, channels=16, num_res_blocks=1)  # YAML gives lists
    assert isinstance(net, UNet)


@pytest.mark.parametrize("cin,cout", [(2, None), (4, 4), (2, 3)])
def test_mlp_shapes(cin: int, cout: int | None) -> None:
    net = MLP(in_channels=cin, out_channels=cout, hidden=32, depth=2, emb_dim=16)
    y = net(torch.randn(7, cin), torch.rand(7) * 1000)
    assert y.shape == (7, cout or cin)


@pytest.mark.parametrize("cin,cout", [(1, None), (2, 2), (3, 6)])
def test_unet_shapes_digits(cin: int, cout: int | None) -> None:
    net = UNet(in_channels=cin, out_channels=cout, **DIGITS)
    y = net(torch.randn(3, cin, 8, 8), torch.randn(3))
    assert y.shape == (3, cout or cin, 8, 8)


def test_unet_shapes_32x32_rgb_and_psld() -> None:
    kw = dict(image_size=32, channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(16,),
              num_heads=2)
    assert UNet(in_channels=3, **kw)(torch.randn(2, 3, 32, 32), torch.rand(2)).shape == (2, 3, 32, 32)
    assert UNet(in_channels=6, out_channels=6, resample_with_conv=False, **kw)(
        torch.randn(2, 6, 32, 32), torch.rand(2)).shape == (2, 6, 32, 32)


def test_untrained_output_is_zero_and_dtype_follows_input() -> None:
    for _, net, shape in small_nets():
        x = torch.randn(shape, dtype=torch.float64)
        y = net(x, torch.rand(shape[0], dtype=torch.float64))
        assert y.dtype == torch.float64 and torch.count_nonzero(y) == 0  # zero-initialised output layer


def test_bf16_autocast_runs() -> None:
    net = perturb_(UNet(in_channels=2, **DIGITS)).eval()
    x, c = torch.randn(2, 2, 8, 8), torch.rand(2) * 1000
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x, c)
    y32 = net(x, c)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert (y - y32).abs().max() < 0.1 * y32.abs().max()


# ---------------------------------------------------------------- gradients and conditioning
def test_zero_init_output_layer_still_receives_gradient() -> None:
    """At init the zero output layer must still get a gradient, or training could never start (linear loss: y = 0)."""
    for name, net, shape in small_nets():
        last = net.out if isinstance(net, MLP) else net.conv_out
        (net(torch.randn(shape), torch.rand(shape[0])) * torch.randn(shape)).sum().backward()
        assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0, name


def test_gradients_reach_every_parameter() -> None:
    for name, net, shape in small_nets():
        perturb_(net)
        net(torch.randn(shape), torch.rand(shape[0]) * 10).mul(torch.randn(shape)).sum().backward()
        for pname, p in net.named_parameters():
            assert p.grad is not None, f"{name}: {pname} is not used in forward"
            assert p.grad.abs().sum() > 0, f"{name}: {pname} receives a zero gradient"


@pytest.mark.parametrize("c1,c2", [(10.0, 900.0), (-1.0, 0.5), (0.0, 0.05)])
def test_conditioning_changes_output(c1: float, c2: float) -> None:
    """c = 1000 t and c = log(sigma)/4 both move the output; a tiny change of c moves it a little."""
    for name, net, shape in small_nets():
        perturb_(net).eval()
        x = torch.randn(shape)
        y1, y2 = net(x, torch.full((shape[0],), c1)), net(x, torch.full((shape[0],), c2))
        rel = (y1 - y2).norm() / y1.norm()
        assert rel > 1e-3, f"{name}: c={c1} vs c={c2} gives relative change {rel:.2e}"


def test_per_sample_conditioning_matches_single_sample_calls() -> None:
    """Each row uses its own c_noise and nothing mixes across the batch (GroupNorm/LayerNorm are per sample)."""
    for name, net, shape in small_nets():
        perturb_(net).eval()
        x, c = torch.randn(shape), torch.tensor([3.0, 250.0, 999.0, 7.0, 500.0])[: shape[0]]
        batched = net(x, c)
        single = torch.cat([net(x[i : i + 1], c[i : i + 1]) for i in range(shape[0])])
        torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5, msg=name)
        torch.testing.assert_close(net(x, c[:1].expand(shape[0])), net(x, c[0]), msg=name)  # scalar broadcast


# ---------------------------------------------------------------- embeddings
def test_positional_embedding_closed_form() -> None:
    dim, c = 16, torch.tensor([0.0, 0.37, -1.25, 999.0])
    emb = PositionalEmbedding(dim)(c)
    half = dim // 2
    for i, ci in enumerate(c.tolist()):
        for k in range(half):
            w = 10000.0 ** (-k / (half - 1))
            assert emb[i, k].item() == pytest.approx(math.sin(ci * w), abs=1e-4)
            assert emb[i, half + k].item() == pytest.approx(math.cos(ci * w), abs=1e-4)


@pytest.mark.parametrize("kind", ["positional", "fourier"])
def test_embedding_distinct_and_deterministic(kind: str) -> None:
    torch.manual_seed(0)
    emb = PositionalEmbedding(32) if kind == "positional" else FourierEmbedding(32, scale=16.0)
    for c1, c2 in [(500.0, 501.0), (-0.8, -0.75), (0.0, 1000.0)]:
        e = emb(torch.tensor([c1, c2, c1]))
        assert (e[0] - e[1]).norm() > 1e-2
        assert torch.equal(e[0], e[2])
    clone = PositionalEmbedding(32) if kind == "positional" else FourierEmbedding(32, scale=16.0)
    clone.load_state_dict(emb.state_dict())  # Fourier frequencies are checkpointed
    c = torch.linspace(-2, 1000, 9)
    assert torch.equal(clone(c), emb(c))


def test_fourier_features_have_unit_pairs_and_right_scale() -> None:
    torch.manual_seed(0)
    emb = FourierEmbedding(4000, scale=16.0)
    e = emb(torch.tensor([0.3, -7.0]))
    torch.testing.assert_close(e.pow(2).sum(1), torch.full((2,), 2000.0))  # cos^2 + sin^2 per frequency
    assert emb.freqs.std().item() == pytest.approx(16.0, rel=0.1)


def test_noise_embedding_width_and_errors() -> None:
    assert NoiseEmbedding(64, "fourier")(torch.rand(3)).shape == (3, 64)
    with pytest.raises(ValueError, match="unknown embedding_type 'sinus'.*positional, fourier"):
        NoiseEmbedding(64, "sinus")
    with pytest.raises(ValueError, match="even"):
        PositionalEmbedding(7)


# ---------------------------------------------------------------- helpers and errors
def test_count_parameters_by_hand() -> None:
    net = MLP(in_channels=2, hidden=8, depth=1, emb_dim=8)
    # embedding 4->8->8: 40 + 72; input 2->8: 24; block: LN 16 + 3 x (8x8 + 8); output LN 16 + 8->2: 18
    assert count_parameters(net) == 112 + 24 + 16 + 3 * 72 + 16 + 18
    net.embed.requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == 24 + 16 + 3 * 72 + 16 + 18


def test_num_groups_divides() -> None:
    for c in range(1, 257):
        g = num_groups(c)
        assert c % g == 0 and 1 <= g <= 32 and (c < 8 or c // g >= 4)
    assert [num_groups(c) for c in (32, 48, 64, 128, 256)] == [8, 12, 16, 32, 32]


def test_bad_configs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"image_size 12 must be divisible by .* = 8"):
        UNet(in_channels=3, image_size=12, channel_mult=(1, 2, 2, 2), attn_resolutions=())
    with pytest.raises(ValueError, match=r"attn_resolutions \[16\] must be among .*\[8, 4\]"):
        UNet(in_channels=1, image_size=8, channel_mult=(1, 2), attn_resolutions=(16,))
    with pytest.raises(ValueError, match="num_heads=3 must divide"):
        UNet(in_channels=1, image_size=8, channels=16, channel_mult=(1, 2), attn_resolutions=(4,), num_heads=3)
    for bad in [(), "12", [1, "a"], [1, 0]]:
        with pytest.raises(ValueError, match="channel_mult must be a non-empty list of positive integers"):
            UNet(in_channels=1, image_size=8, channel_mult=bad, attn_resolutions=())
    with pytest.raises(ValueError, match=r"in_channels must be a positive integer, got \(1, 2\)"):
        UNet(in_channels=(1, 2))
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['width'\] for net 'unet'; allowed: .*channels"):
        get_net("unet", in_channels=1, width=3)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['layers'\] for net 'mlp'"):
        get_net("mlp", in_channels=2, layers=3)
    with pytest.raises(UnknownNameError, match="unknown net 'resnet'; registered: .*mlp.*unet"):
        get_net("resnet", in_channels=1)
    with pytest.raises(ValueError, match="dropout"):
        MLP(in_channels=2, dropout=1.5)


def test_bad_inputs_raise_clear_errors() -> None:
    unet, mlp = UNet(in_channels=2, **DIGITS), MLP(in_channels=4, hidden=16, depth=1, emb_dim=8)
    with pytest.raises(ValueError, match=r"expects x of shape \[B, 2, H, W\], got \(3, 1, 8, 8\)"):
        unet(torch.randn(3, 1, 8, 8), torch.rand(3))
    with pytest.raises(ValueError, match="divisible by 2"):
        unet(torch.randn(3, 2, 7, 7), torch.rand(3))
    with pytest.raises(ValueError, match=r"expects x of shape \[B, 4\]"):
        mlp(torch.randn(3, 2), torch.rand(3))
    with pytest.raises(ValueError, match=r"c_noise must have shape \[B\]=\[3\]"):
        mlp(torch.randn(3, 4), torch.rand(3, 1))


# ---------------------------------------------------------------- learning
def test_mlp_fits_conditioned_target() -> None:
    """In a few hundred Adam steps the MLP learns y = sin(2x) for c = 100 and y = cos(2x) for c = 900."""
    torch.manual_seed(0)
    net = MLP(in_channels=2, hidden=64, depth=2, emb_dim=32)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.rand(n, 2) * 4 - 2
        which = torch.rand(n) < 0.5
        c = torch.where(which, 100.0, 900.0)
        y = torch.where(which[:, None], torch.sin(2 * x), torch.cos(2 * x))
        return x, c, y

    for _ in range(400):
        x, c, y = batch(256)
        loss = (net(x, c) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, c, y = batch(2000)
    with torch.no_grad():
        mse = (net(x, c) - y).pow(2).mean().item()
    assert mse < 0.02 * y.var().item(), f"mse {mse:.4f} vs target variance {y.var().item():.4f}"
