"""Checkpoints: round trip, every kind of damage gives a clear CheckpointError, diffusers folders load offline."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_tiny_checkpoint
from explainer.model.checkpoint import CONFIG, WEIGHTS, CheckpointError, DiffusionModel, load_model
from explainer.diffusion.respacing import make_chain
from explainer.diffusion.samplers import run
from explainer.model.unet import UNet, UNetConfig


@pytest.fixture
def ckpt(tiny_ckpt, tmp_path):
    """A private copy of the tiny checkpoint that a test may damage."""
    return shutil.copytree(tiny_ckpt, tmp_path / "ckpt")


def test_round_trip(tiny_ckpt, tiny_model):
    cfg = json.loads((tiny_ckpt / CONFIG).read_text())
    net = UNet(UNetConfig.from_dict(cfg["unet"]))
    net.load_state_dict(load_file(str(tiny_ckpt / WEIGHTS)))
    net.eval()
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([1, 400, 1000]), torch.tensor([0, 5, 10])
    levels = torch.from_numpy(tiny_model.schedule.alpha_bars[t.numpy() - 1])  # eps is told the noise level of t
    with torch.no_grad():
        ref = net(x, t, y)
        out = tiny_model.eps(x, levels, y)
    assert torch.equal(out, ref) and out.abs().max() > 0
    assert tiny_model.kind == "explainer" and tiny_model.num_classes == 10 and tiny_model.null_label == 10
    assert tiny_model.image_size == 28 and tiny_model.channels == 1 and tiny_model.schedule.T == 1000
    assert not any(p.requires_grad for p in tiny_model.net.parameters()) and not tiny_model.net.training


def test_save_load_save_is_identical(tmp_path):
    a = make_tiny_checkpoint(tmp_path / "a", seed=3)
    m = load_model(a, device="cpu")
    from explainer.model.checkpoint import save_checkpoint
    b = save_checkpoint(tmp_path / "b", m.net, m.config["schedule"], m.class_names)
    sa, sb = load_file(str(a / WEIGHTS)), load_file(str(b / WEIGHTS))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not list(b.glob("*.tmp"))


def test_path_to_weights_file_is_accepted(tiny_ckpt):
    assert load_model(tiny_ckpt / WEIGHTS, device="cpu").path == str(tiny_ckpt)


def test_schedule_comes_from_config(tmp_path):
    m = load_model(make_tiny_checkpoint(tmp_path / "c", schedule="cosine", num_steps=200), device="cpu")
    assert m.schedule.name == "cosine" and m.schedule.T == 200


def expect(path, match):
    with pytest.raises(CheckpointError, match=match):
        load_model(path, device="cpu")


def test_missing_folder(tmp_path):
    expect(tmp_path / "nope", "checkpoint not found")


def test_not_a_folder(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    expect(f, "not a checkpoint folder")


@pytest.mark.parametrize("name", [WEIGHTS, CONFIG])
def test_missing_file(ckpt, name):
    (ckpt / name).unlink()
    expect(ckpt, f"incomplete: {name} is missing")


@pytest.mark.parametrize("keep", [0, 7, 100, 0.5])
def test_truncated_weights(ckpt, keep):
    data = (ckpt / WEIGHTS).read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    (ckpt / WEIGHTS).write_bytes(data[:n])
    expect(ckpt, "truncated or not safetensors")


def test_invalid_json(ckpt):
    (ckpt / CONFIG).write_text('{"format": "ddpm-explainer/1", "unet": ')
    expect(ckpt, "not valid JSON")


@pytest.mark.parametrize("fmt", ["something-else/2", None])
def test_wrong_format(ckpt, fmt):
    cfg = json.loads((ckpt / CONFIG).read_text())
    cfg["format"] = fmt
    (ckpt / CONFIG).write_text(json.dumps(cfg))
    expect(ckpt, "is not a ddpm-explainer/1 config")


def test_json_not_an_object(ckpt):
    (ckpt / CONFIG).write_text("[1, 2, 3]")
    expect(ckpt, "is not a ddpm-explainer/1 config")


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.pop("schedule"), "missing or invalid field"),
    (lambda c: c["schedule"].update(name="zigzag"), "missing or invalid field"),
    (lambda c: c["unet"].update(colour="red"), "missing or invalid field"),
    (lambda c: c.update(class_names=["a", "b"]), "2 class names but the U-Net has 10 classes"),
])
def test_bad_config_fields(ckpt, edit, match):
    cfg = json.loads((ckpt / CONFIG).read_text())
    edit(cfg)
    (ckpt / CONFIG).write_text(json.dumps(cfg))
    expect(ckpt, match)


def test_mismatched_architecture(ckpt):
    cfg = json.loads((ckpt / CONFIG).read_text())
    cfg["unet"]["base_channels"] = 16
    (ckpt / CONFIG).write_text(json.dumps(cfg))
    expect(ckpt, "does not match the architecture")


def test_missing_tensor(ckpt):
    state = load_file(str(ckpt / WEIGHTS))
    state.pop(sorted(state)[0])
    save_file(state, str(ckpt / WEIGHTS))
    expect(ckpt, r"1 missing tensors")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights(ckpt, bad):
    state = load_file(str(ckpt / WEIGHTS))
    key = sorted(state)[3]
    state[key] = state[key].clone()
    state[key].view(-1)[0] = bad
    save_file(state, str(ckpt / WEIGHTS))
    expect(ckpt, f"tensor {key} holds NaN or inf")


def test_cuda_when_unavailable(tiny_ckpt):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    with pytest.raises(CheckpointError, match="CUDA is not available"):
        load_model(tiny_ckpt, device="cuda")


# ---- diffusers folders ---------------------------------------------------------------------------


def tiny_diffusers_unet():
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(4, 8), layers_per_block=1,
                       norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D")).eval()


def test_diffusers_unet_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    unet = tiny_diffusers_unet()
    folder = tmp_path / "dunet"
    unet.save_pretrained(folder)
    (folder / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "DDPMScheduler", "beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 200}))
    m = load_model(folder, device="cpu")
    assert isinstance(m, DiffusionModel) and m.kind == "diffusers"
    assert m.image_size == 8 and m.channels == 1 and m.num_classes == 0 and m.null_label is None
    assert m.schedule.name == "cosine" and m.schedule.T == 200
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1, 200])
    levels = torch.from_numpy(m.schedule.alpha_bars[t.numpy() - 1])
    with torch.no_grad():
        torch.testing.assert_close(m.eps(x, levels), unet(x, t - 1).sample)  # paper t -> diffusers index t - 1
    x0 = run(m.eps, make_chain(m.schedule, 5), (2, 1, 8, 8), seed=0, clip_x0=True)
    assert x0.shape == (2, 1, 8, 8) and torch.isfinite(x0).all()


def test_diffusers_pipeline_folder_with_custom_betas(tmp_path, monkeypatch):
    from diffusers import DDPMPipeline, DDPMScheduler
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    unet = tiny_diffusers_unet()
    sched = DDPMScheduler(num_train_timesteps=100, beta_start=2e-4, beta_end=0.04)
    DDPMPipeline(unet, sched).save_pretrained(tmp_path / "pipe")
    m = load_model(tmp_path / "pipe", device="cpu")
    np.testing.assert_allclose(m.schedule.betas, sched.betas.double().numpy(), rtol=1e-6)
    assert m.schedule.T == 100


def test_diffusers_folder_defaults_to_linear_1000(tmp_path):
    tiny_diffusers_unet().save_pretrained(tmp_path / "u")
    m = load_model(tmp_path / "u", device="cpu")
    assert m.schedule.name == "linear" and m.schedule.T == 1000


def test_diffusers_bad_scheduler(tmp_path):
    folder = tmp_path / "u"
    tiny_diffusers_unet().save_pretrained(folder)
    (folder / "scheduler_config.json").write_text(json.dumps({"beta_schedule": "laplace"}))
    expect(folder, "unsupported beta_schedule")
    (folder / "scheduler_config.json").write_text("{broken")
    expect(folder, "scheduler_config.json")


def test_diffusers_damaged_weights(tmp_path):
    folder = tmp_path / "u"
    tiny_diffusers_unet().save_pretrained(folder)
    w = folder / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[:50])
    expect(folder, "cannot load diffusers UNet2DModel")
