"""algnet.Mamba keeps mamba_ssm.Mamba's parameter names and shapes."""

import math

import torch

import algnet


def test_parameter_names_and_shapes_match_mamba_ssm():
    m = algnet.Mamba(d_model=32, d_state=32, d_conv=4, expand=2)
    e, r = 64, math.ceil(32 / 16)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "A_log": (e, 32), "D": (e,), "in_proj.weight": (2 * e, 32), "conv1d.weight": (e, 1, 4), "conv1d.bias": (e,),
        "x_proj.weight": (r + 64, e), "dt_proj.weight": (e, r), "dt_proj.bias": (e,), "out_proj.weight": (32, e),
    }


def test_initialisation_follows_mamba_ssm():
    torch.manual_seed(0)
    m = algnet.Mamba(d_model=16, d_state=8, dt_min=0.001, dt_max=0.1)
    torch.testing.assert_close(-torch.exp(m.A_log), -torch.arange(1, 9.0).repeat(32, 1))
    dt = torch.nn.functional.softplus(m.dt_proj.bias)
    assert dt.min() >= 0.001 - 1e-6 and dt.max() <= 0.1 + 1e-6
    assert torch.equal(m.D, torch.ones(32))


def test_runs_in_float32_under_autocast():
    m = algnet.Mamba(d_model=8, d_state=4)
    x = torch.randn(2, 10, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x.bfloat16())
    assert y.dtype == torch.float32 and y.shape == (2, 10, 8)
    torch.testing.assert_close(y, m(x), rtol=2e-2, atol=2e-2)
