"""The loop's main optimizer: AdamW (the recipe) and the Muon lever (snapgen.training.optim)."""
import json

import pytest
import torch
from torch import nn

from snapgen.models.unet import SnapGenUNet
from snapgen.presets import PRESETS
from snapgen.training.optim import MuonAdamW, build_optimizer, orthogonalise, split_muon_params

MICRO = PRESETS["tiny-world"].replace(channels=(16, 32, 32), head_dim=16, norm_groups=4, emb_mult=2)


def test_newton_schulz_pushes_every_singular_value_towards_one():
    g = torch.Generator().manual_seed(0)
    for rows, cols in ((32, 96), (96, 32), (64, 64)):
        k = min(rows, cols)
        u, _ = torch.linalg.qr(torch.randn(rows, k, generator=g))
        v, _ = torch.linalg.qr(torch.randn(cols, k, generator=g))
        m = u @ torch.diag(torch.logspace(-1.5, 1, k)) @ v.T              # singular values 0.03 .. 10
        s = torch.linalg.svdvals(orthogonalise(m))
        # the quintic iteration is tuned for speed, not exactness: singular values land in ~[0.7, 1.2]
        assert s.min() > 0.5 and s.max() < 1.3, ((rows, cols), s.min(), s.max())


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    net = SnapGenUNet(MICRO)
    muon, adamw = split_muon_params({"unet": net})
    names = {id(p): n for n, p in net.named_parameters()}
    muon_names, adamw_names = {names[id(p)] for p in muon}, {names[id(p)] for p in adamw}
    assert len(muon) + len(adamw) == len(list(net.parameters())) and not muon_names & adamw_names
    assert {"conv_in.weight", "conv_out.weight"} <= adamw_names                       # the pixel interface
    assert all(n.endswith("bias") or net.get_parameter(n).ndim == 1 or "depthwise" in n or n.startswith("conv_")
               for n in adamw_names)
    assert any("ff.proj_in" in n for n in muon_names) and any("pointwise" in n for n in muon_names)
    emb = nn.Embedding(10, 8)
    m2, a2 = split_muon_params({"labels": emb})
    assert not m2 and len(a2) == 1                                                    # embedding tables: AdamW


def test_the_adamw_half_is_torch_adamw():
    torch.manual_seed(0)
    a, b = nn.Linear(8, 4), nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())
    ref = torch.optim.AdamW(a.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    ours = MuonAdamW([{"params": list(b.parameters()), "muon": False}], lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    for i in range(5):
        x = torch.randn(16, 8, generator=torch.Generator().manual_seed(i))
        for net, opt in ((a, ref), (b, ours)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)                       # it is torch.optim.AdamW for those groups


def test_a_muon_step_has_the_rms_of_an_adamw_step_and_follows_the_lr_schedule():
    """The 0.2 sqrt(max(rows, cols)) scale: an update of RMS ~0.2 lr, as AdamW's typical update (Moonshot)."""
    w = nn.Parameter(torch.zeros(64, 256))
    opt = MuonAdamW([{"params": [w], "muon": True}], lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    rms = []
    for i in range(3):
        w.grad = torch.randn(64, 256, generator=torch.Generator().manual_seed(i))
        before = w.detach().clone()
        opt.step()
        sched.step()
        rms.append(float((w.detach() - before).square().mean().sqrt()))
    assert 0.7 * 0.2e-2 < rms[0] < 1.3 * 0.2e-2
    assert rms[1] == pytest.approx(rms[0] / 2, rel=0.35) and rms[2] == pytest.approx(rms[0] / 4, rel=0.35)


def test_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="optimizer='sgd'"):
        build_optimizer("sgd", {"m": nn.Linear(2, 2)}, 1e-3, (0.9, 0.999), 0.0)


def test_muon_training_resumes_exactly_and_changing_the_optimizer_is_refused(tmp_path):
    from safetensors.torch import load_file

    from snapgen.train import TrainConfig, train

    def _cfg(out, unet, **kw):
        return TrainConfig(out=str(out), unet=unet, steps=6, batch_size=4, log_every=1, ckpt_every=3, warmup=2,
                           sample_steps=2, threads=1, processes=1, **kw)

    def _weights(run):
        ck = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
        return {f"{d}.{k}": v for d in ("unet", "ema")
                for k, v in load_file(ck / d / "diffusion_pytorch_model.safetensors").items()}

    cfg_path = tmp_path / "unet.json"
    cfg_path.write_text(MICRO.to_json())
    full = train(_cfg(tmp_path / "full", str(cfg_path), optimizer="muon"), progress=False)
    part = tmp_path / "part"
    train(_cfg(part, str(cfg_path), optimizer="muon", stop_at=3), progress=False)
    with pytest.raises(ValueError, match="optimizer"):
        train(_cfg(part, str(cfg_path)), progress=False)                     # adamw on a muon checkpoint
    train(_cfg(part, str(cfg_path), optimizer="muon"), progress=False)
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    plain = train(_cfg(tmp_path / "plain", str(cfg_path)), progress=False)
    c = _weights(plain)
    assert any(not torch.equal(a[k], c[k]) for k in a)                       # the lever changes the run
    stored = json.loads((full / "train_config.json").read_text())
    assert stored["optimizer"] == "muon" and stored["muon_momentum"] == 0.95
    assert TrainConfig().optimizer == "adamw"                                # the recipe is unchanged
