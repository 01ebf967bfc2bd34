"""The U-Net: shapes, conditioning, the null label, trainability, describe(), config validation."""
from __future__ import annotations

import pytest
import torch

from explainer.model.unet import UNet, UNetConfig, count_parameters, describe


def perturbed(cfg: UNetConfig, seed=0) -> UNet:
    """Zero-initialised output layers make eps identically 0 at init: perturb so outputs depend on inputs."""
    torch.manual_seed(seed)
    net = UNet(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


CONFIGS = [
    dict(image_size=28, in_channels=1, base_channels=8, channel_mults=(1, 2), attention_levels=(1,), num_heads=2,
         num_classes=10, groups=4),
    dict(image_size=32, in_channels=3, base_channels=8, channel_mults=(1, 2, 2), attention_levels=(2,), num_heads=2,
         num_classes=0, groups=4, num_res_blocks=2),
    dict(image_size=16, in_channels=1, base_channels=4, channel_mults=(1, 2, 4), attention_levels=(), num_heads=1,
         num_classes=3, groups=2),
    dict(image_size=28, in_channels=1, base_channels=8, channel_mults=(1,), attention_levels=(0,), num_heads=1,
         num_classes=0, groups=4),
]


@pytest.mark.parametrize("kw", CONFIGS)
def test_output_shape_and_features(kw):
    cfg = UNetConfig(**kw)
    net = perturbed(cfg)
    x = torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size)
    t = torch.tensor([1, 999])
    labels = torch.tensor([0, cfg.num_classes - 1]) if cfg.num_classes else None
    feats = []
    with torch.no_grad():
        out = net(x, t, labels, features=feats)
        assert net(x, torch.tensor(500), labels).shape == x.shape  # a scalar t is broadcast
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert len(feats) == len(net.down) + 1 + len(net.up)
    assert [k for k, _ in feats].count("middle") == 1
    assert feats[-1][1].shape[-1] == cfg.image_size  # the decoder ends at full resolution


def test_zero_init_output_predicts_zero():
    """The output convolution starts at zero (improved-diffusion): an untrained net predicts eps = 0."""
    net = UNet(UNetConfig(**CONFIGS[0]))
    with torch.no_grad():
        assert torch.equal(net(torch.randn(1, 1, 28, 28), torch.tensor([10])), torch.zeros(1, 1, 28, 28))


def test_time_and_conditioning_change_the_output():
    net = perturbed(UNetConfig(**CONFIGS[0]))
    x = torch.randn(1, 1, 28, 28).expand(3, 1, 28, 28)
    t = torch.tensor([300, 300, 300])
    with torch.no_grad():
        out = net(x, t, torch.tensor([0, 1, 2]))
        assert (out[0] - out[1]).abs().max() > 1e-4 and (out[1] - out[2]).abs().max() > 1e-4
        out_t = net(x[:2], torch.tensor([10, 900]), torch.tensor([0, 0]))
        assert (out_t[0] - out_t[1]).abs().max() > 1e-4
        # the same input twice gives the same output (no hidden state, eval mode)
        assert torch.equal(net(x[:1], t[:1], torch.tensor([0])), net(x[:1], t[:1], torch.tensor([0])))


def test_null_label_equals_none():
    cfg = UNetConfig(**CONFIGS[0])
    net = perturbed(cfg)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([5, 700])
    with torch.no_grad():
        uncond = net(x, t, None)
        null = net(x, t, torch.full((2,), cfg.null_label))
        cond = net(x, t, torch.tensor([3, 3]))
    assert cfg.null_label == 10
    torch.testing.assert_close(uncond, null, rtol=0, atol=0)
    assert (uncond - cond).abs().max() > 1e-4
    assert UNetConfig(**CONFIGS[1]).null_label is None


def test_batch_items_are_independent():
    net = perturbed(UNetConfig(**CONFIGS[0]))
    x, t, y = torch.randn(4, 1, 28, 28), torch.tensor([1, 50, 500, 1000]), torch.tensor([0, 4, 9, 10])
    with torch.no_grad():
        full = net(x, t, y)
        for i in range(4):
            torch.testing.assert_close(full[i:i + 1], net(x[i:i + 1], t[i:i + 1], y[i:i + 1]), rtol=1e-5, atol=1e-5)


def test_adamw_reduces_the_loss():
    torch.manual_seed(0)
    cfg = UNetConfig(**CONFIGS[2])
    net = UNet(cfg).train()
    x = torch.randn(8, 1, 16, 16)
    t = torch.randint(1, 1000, (8,))
    y = torch.randint(0, 3, (8,))
    target = torch.randn_like(x)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = torch.nn.functional.mse_loss(net(x, t, y), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("kw", CONFIGS[:3])
def test_describe_rows_add_up(kw):
    cfg = UNetConfig(**kw)
    net = UNet(cfg)
    rows = describe(net)
    names = [r["name"] for r in rows]
    assert names[0] == "embedding" and names[1] == "conv_in" and names[-1] == "out" and "middle" in names
    assert len(names) == len(set(names)) == 4 + len(net.down) + len(net.up)
    assert sum(r["params"] for r in rows) == count_parameters(net)
    assert count_parameters(net) == sum(p.numel() for p in net.parameters())
    by_name = {r["name"]: r for r in rows}
    assert by_name["conv_in"]["in_shape"] == [cfg.in_channels, cfg.image_size, cfg.image_size]
    assert by_name["out"]["out_shape"] == [cfg.in_channels, cfg.image_size, cfg.image_size]
    # consecutive encoder stages chain: each one's output is the next one's input
    seq = ["conv_in"] + [f"down.{i}" for i in range(len(net.down))] + ["middle"]
    for a, b in zip(seq, seq[1:]):
        assert by_name[a]["out_shape"] == by_name[b]["in_shape"]
    lowest = cfg.image_size // 2 ** (len(cfg.channel_mults) - 1)
    assert by_name["middle"]["out_shape"][1:] == [lowest, lowest]
    assert by_name["embedding"]["out_shape"] == [4 * cfg.base_channels]


def test_config_round_trip():
    cfg = UNetConfig(**CONFIGS[1])
    d = cfg.to_dict()
    assert isinstance(d["channel_mults"], list)
    assert UNetConfig.from_dict(d) == cfg


@pytest.mark.parametrize("kw, match", [
    (dict(image_size=30, channel_mults=(1, 2, 2)), "divisible by 2"),
    (dict(base_channels=10, groups=4), "divisible by groups"),
])
def test_bad_configs(kw, match):
    with pytest.raises(ValueError, match=match):
        UNetConfig(**kw)


def test_unknown_config_key():
    with pytest.raises(ValueError, match="unknown U-Net config keys"):
        UNetConfig.from_dict({"image_size": 28, "chanels": 3})
