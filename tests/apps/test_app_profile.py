"""``algnet profile`` and algnet.profiling: params, MACs in both conventions, the JSON output."""

import json

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import algnet
from algnet.cli import main
from algnet.profiling import count_macs, count_params, fake_mode, mamba_macs, profile_macs

TINY = {"width": 8, "enc_blocks": (1, 1, 1, 1), "mid_blocks": 1, "dec_blocks": (1, 1, 1, 1)}


class TestClosedForms:
    @pytest.mark.parametrize("cin,cout,k,stride,groups,bias", [(3, 8, 3, 1, 1, True), (8, 8, 3, 2, 8, True), (4, 6, 1, 1, 2, False), (3, 5, 2, 2, 1, False)])
    def test_conv2d(self, cin, cout, k, stride, groups, bias):
        conv = nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=bias)
        h, w = 21, 34
        ho, wo = (h + 2 * (k // 2) - k) // stride + 1, (w + 2 * (k // 2) - k) // stride + 1
        expected = 2 * ho * wo * cout * (cin // groups) * k * k + (2 * ho * wo * cout if bias else 0)  # batch 2
        macs = count_macs(conv, (2, cin, h, w))
        assert macs.paper == macs.full == expected

    @pytest.mark.parametrize("bias", [True, False])
    def test_linear(self, bias):
        layer = nn.Linear(12, 7, bias=bias)
        # ptflops: numel(input) * out_features, plus out_features once for the bias (its convention).
        assert count_macs(layer, (2, 5, 12)).paper == 2 * 5 * 12 * 7 + (7 if bias else 0)

    def test_norm_and_activation(self):
        model = nn.Sequential(nn.LayerNorm(6), nn.GELU(), nn.InstanceNorm2d(6, affine=False))
        assert count_macs(model, (1, 6, 4, 6)).paper == 2 * 144 + 144 + 144

    def test_mamba_layer(self):
        d, n, expand, k, length = 16, 8, 2, 4, 40
        layer = algnet.Mamba(d, d_state=n, d_conv=k, expand=expand, scan_backend="reference")
        e, r = expand * d, layer.dt_rank
        macs = count_macs(layer, (3, length, d))
        assert macs.paper == 0  # invisible, as behind mamba_ssm's fused kernel
        per_token = d * 2 * e + (e * k + e) + e * (r + 2 * n) + (r * e + e) + (3 * e * n + 3 * e) + e * d
        assert macs.full == 3 * length * per_token

    def test_mamba_projections_match_torch_flop_counter(self):
        # torch's FlopCounterMode counts matrix products (2 FLOPs per MAC, no biases): they must be
        # our in_proj, x_proj, dt_proj and out_proj counts. (The scan and the causal conv1d are
        # elementwise or fused kernels that it cannot see, whatever the Mamba layer's internals.)
        d, n, length, batch = 16, 8, 30, 2
        layer = algnet.Mamba(d, d_state=n, scan_backend="reference")
        e = layer.d_inner
        parts = mamba_macs(layer, batch, length)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            layer(torch.randn(batch, length, d))
        matmul_flops = sum(v for op, v in counter.get_flop_counts()["Global"].items() if "mm" in str(op))
        dense = parts["in_proj"] + parts["x_proj"] + parts["dt_proj"] - batch * length * e + parts["out_proj"]
        assert matmul_flops // 2 == dense


class TestModels:
    def test_params_equal_numel(self):
        fake = profile_macs("algnet", **TINY)
        real = algnet.create_model("algnet", **TINY)
        assert fake.params == count_params(real) == sum(p.numel() for p in real.parameters())

    def test_mamba_parts_match_closed_forms_over_the_tokens_each_layer_sees(self, monkeypatch):
        """The tokens each Mamba layer receives are recorded by hooks on a real forward pass (not the
        counter's stand-ins); per token, Mamba's closed-form MACs (see test_mamba_layer)."""
        monkeypatch.setenv("ALGNET_SCAN_BACKEND", "reference")
        model = algnet.create_model("algnet", **TINY)
        seen = []
        for layer in (m for m in model.modules() if isinstance(m, algnet.Mamba)):
            layer.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0].shape[0] * inp[0].shape[1])))
        model(torch.rand(1, 3, 64, 48))
        assert len(seen) == 9  # one global branch per block: 4 + 1 + 4
        expected = dict.fromkeys(("in_proj", "conv1d", "x_proj", "dt_proj", "scan", "out_proj"), 0)
        for layer, tokens in seen:
            d, e, n, r, k = layer.in_proj.in_features, layer.d_inner, layer.d_state, layer.dt_rank, layer.conv1d.kernel_size[0]
            for part, per_token in (("in_proj", d * 2 * e), ("conv1d", e * k + e), ("x_proj", e * (r + 2 * n)),
                                    ("dt_proj", r * e + e), ("scan", 3 * e * n + 3 * e), ("out_proj", e * d)):
                expected[part] += tokens * per_token
        row = profile_macs("algnet", (64, 48), **TINY)
        assert row.parts == expected
        assert row.macs_full - row.macs_paper == sum(expected.values())

    def test_fake_count_equals_real_count(self):
        torch.manual_seed(0)
        real = algnet.create_model("algnet", **TINY).eval()
        with fake_mode():
            fake = algnet.create_model("algnet", **TINY).eval()
            from_fake = count_macs(fake, (1, 3, 40, 56))
        assert count_macs(real, (1, 3, 40, 56)) == from_fake

    def test_nafnet32_matches_published_macs(self):
        # NAFNet (Chen et al. 2022) reports 16 G MACs for NAFNet-32 at 256x256 with the same counter.
        row = profile_macs("nafnet32")
        assert row.macs_paper == row.macs_full and 15.9e9 < row.macs_paper < 16.2e9
        assert 17.0e6 < row.params < 17.2e6


def run(capsys, *argv):
    code = main(["profile", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_macs_only(capsys):
    code, out, err = run(capsys, "--models", "nafnet32", "--no-latency", "--json")
    assert code == 0, err
    data = json.loads(out)
    (row,) = data["models"]
    assert row["model"] == "nafnet32" and row["params"] == count_params(algnet.create_model("nafnet32"))
    assert row["macs_paper"] == row["macs_full"] == profile_macs("nafnet32").macs_paper and row["latency_s"] is None


def test_cli_latency_table_and_json(capsys):
    """Peak memory of the plain model is at least the intro convolution's output, a (1, 32, 128, 128)
    float32 tensor (2 MiB) every forward pass holds; progress reaches stderr pass by pass."""
    code, out, err = run(capsys, "--models", "nafnet32", "--size", "128x128", "--repeats", "2", "--threads", "1", "--device", "cpu",
                         "--json", "--no-fuse")
    assert code == 0, err
    data = json.loads(out)
    (row,) = data["models"]
    assert row["latency_s"] > 0 and row["size"] == [128, 128] and row["device"] == "cpu"
    assert 32 * 128 * 128 * 4 <= row["peak_memory_bytes"] < 2**30
    assert row["weights_bytes"] == 4 * row["params"]
    assert row["graph_latency_s"] is None  # CUDA only
    assert data["cpu"]["isa"] in ("AVX-512", "AVX2", "AVX", "SSE4.2", "SVE", "NEON", "unknown")
    steps = [line.split(": ", 1)[1] for line in err.splitlines() if line.startswith(("nafnet32: ", "[1/1] nafnet32: "))]
    assert steps[0].startswith("params and MACs") and steps[1].startswith("warm-up") and steps[2].startswith("first pass")
    assert [s.split(":")[0] for s in steps[3:5]] == ["run 1/2", "run 2/2"] and steps[5].startswith("median")
    assert "the full table" not in err  # every default overridden


def test_cpu_defaults_time_algnet_and_nafnet32_small(capsys, monkeypatch):
    calls = []

    def fake(name, size, device, repeats, timeout=None, overrides=None, threads=None, fuse=True, progress=None):
        calls.append((name, tuple(size), device, repeats))
        return dict(latency_s=0.5, peak_memory_bytes=2**20, weights_bytes=4, graph_latency_s=None, device=device,
                    scan_backend="cpu", threads=1)

    monkeypatch.setattr("algnet.profiling.measure_in_subprocess", fake)
    code, out, err = run(capsys, "--device", "cpu")
    assert code == 0, err
    assert calls == [("algnet", (256, 256), "cpu", 3), ("nafnet32", (256, 256), "cpu", 3)]
    assert "--models algnet algnet_b algnet_nafnet_layout nafnet32 --size 720x1280 --repeats 5" in err
    assert "CPU: " in out.splitlines()[-1]


def test_table_shows_graph_latency_where_measured():
    from algnet.profiling import ProfileRow, format_table

    common = dict(params=1, macs_paper=2, macs_full=3, mac_size=(256, 256), size=(720, 1280), device="cuda:0",
                  scan_backend="triton", threads=1, peak_memory_bytes=2**20, latency_s=0.0902)
    table = format_table([ProfileRow("algnet", graph_latency_s=0.0592, **common), ProfileRow("nafnet32", **common)])
    head, _, first, second = table.splitlines()[:4]
    assert "graph (s)" in head and "0.090" in first and "0.059" in first
    assert second.split()[-2:] == ["-", "1"]  # no graph time measured: a dash, then the memory
    assert "graph (s)" not in format_table([ProfileRow("nafnet32", **common)])


def test_cli_table(capsys):
    code, out, err = run(capsys, "--models", "nafnet32", "--no-latency")
    assert code == 0 and "nafnet32" in out and "16.08" in out and "paper Table 6" in out


def test_cli_errors(capsys):
    code, out, err = run(capsys, "--models", "resnet50", "--no-latency")
    assert code == 2 and "unknown model 'resnet50'" in err
    with pytest.raises(SystemExit):
        main(["profile", "--size", "720by1280"])
