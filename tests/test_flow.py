"""Rectified flow: exact answers for the convention, samplers, loss and Euler sampling."""
import pytest
import torch

from snapgen.flow import (FlowConfig, cfg_velocity, euler_sample, flow_loss, interpolate, loss_by_t_bins,
                          predict_x0, sample_timesteps, shift_timesteps, timestep_schedule, velocity_target)


def test_convention_endpoints():
    x0, noise = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    assert torch.equal(interpolate(x0, noise, torch.zeros(3)), x0)          # t=0 is data
    assert torch.equal(interpolate(x0, noise, torch.ones(3)), noise)        # t=1 is noise
    t = torch.tensor([0.3, 0.5, 0.9])
    x_t = interpolate(x0, noise, t)
    v = velocity_target(x0, noise)
    assert torch.allclose(predict_x0(x_t, t, v), x0, atol=1e-6)


def test_oracle_velocity_recovers_x0_and_has_zero_loss():
    x0, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    oracle = lambda x_t, t: noise - x0  # the straight path's constant velocity
    assert torch.allclose(euler_sample(oracle, noise, steps=28), x0, atol=1e-5)
    assert torch.allclose(euler_sample(oracle, noise, steps=1), x0, atol=1e-5)
    loss, per_sample, _ = flow_loss(lambda x_t, t: noise - x0, x0, torch.rand(4), noise)
    assert loss.item() == 0 and per_sample.shape == (4,)


def test_timestep_samplers():
    g = torch.Generator().manual_seed(0)
    for sampler in ("uniform", "logit_normal", "shifted_logit_normal"):
        t = sample_timesteps(20000, FlowConfig(sampler=sampler, shift=3.0 if "shifted" in sampler else 1.0), g)
        assert t.min() > 0 and t.max() < 1
    t = sample_timesteps(20000, FlowConfig("logit_normal"), g)
    assert abs(t.median().item() - 0.5) < 0.02                          # logit-normal(0, 1) median is 0.5
    ts = sample_timesteps(20000, FlowConfig("logit_normal", shift=3.0), g)
    assert ts.median() > 0.7                                             # shift moves mass towards noise
    assert shift_timesteps(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)
    with pytest.raises(ValueError):
        sample_timesteps(2, FlowConfig(sampler="cosine"))


def test_schedule_and_sampler_shapes():
    ts = timestep_schedule(4)
    assert torch.allclose(ts, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    x = euler_sample(lambda x, t: torch.zeros_like(x), torch.ones(2, 3, 5, 5), steps=8)
    assert torch.equal(x, torch.ones(2, 3, 5, 5))
    with pytest.raises(ValueError):
        timestep_schedule(0)


def test_classifier_free_guidance_combines_branches():
    def model(x, t, cond):
        return cond.view(-1, 1, 1, 1).expand_as(x)                       # v = the condition value

    x, t = torch.zeros(2, 1, 2, 2), torch.ones(2)
    cond, uncond = {"cond": torch.tensor([2.0, 2.0])}, {"cond": torch.tensor([1.0, 1.0])}
    v = cfg_velocity(model, cond, uncond, guidance=3.0)(x, t)
    assert torch.allclose(v, torch.full_like(x, 1 + 3 * (2 - 1)))
    assert torch.allclose(cfg_velocity(model, cond, uncond, 1.0)(x, t), torch.full_like(x, 2.0))


def test_loss_by_t_bins():
    out = loss_by_t_bins(torch.tensor([0.1, 0.2, 0.9]), torch.tensor([1.0, 3.0, 5.0]), bins=4)
    assert out == {"t0.00-0.25": 2.0, "t0.75-1.00": 5.0}
