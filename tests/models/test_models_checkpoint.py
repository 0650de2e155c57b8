"""Checkpoint loading: official manifest, wrappers, safetensors round trip, refusals."""

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

import algnet
from algnet.models import CheckpointError, filter_official_state_dict, infer_model_config

REFERENCE = Path(__file__).resolve().parents[1] / "reference"  # see tests/reference/README.md
MANIFEST = json.loads((REFERENCE / "official_state_dict_manifest.json").read_text())
VARIANT_OF = {"width32_default": "algnet", "width64_default": "algnet_b", "width32_nafnet_layout": "algnet_nafnet_layout"}
TINY = dict(width=8, enc_blocks=(1, 1, 1, 1), mid_blocks=1, dec_blocks=(1, 1, 1, 1))
UNUSED = ("gamma", "conv3_2.weight", "conv3_2.bias")


def manifest_state_dict(key, device="meta"):
    return {k: torch.empty(shape, device=device) for k, shape in MANIFEST[key]["state_dict"].items()}


@pytest.mark.parametrize("key", list(MANIFEST))
def test_manifest_loads_strictly_into_inferred_model(key):
    state = filter_official_state_dict(manifest_state_dict(key))
    config = infer_model_config(state)
    assert config["name"] == "algnet"
    with torch.device("meta"):
        model = algnet.create_model(config["name"], **config["kwargs"])
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    model.load_state_dict(state, strict=True, assign=True)


@pytest.mark.parametrize("key", list(MANIFEST))
def test_parameter_counts_match_manifest_minus_unused(key):
    official = MANIFEST[key]["state_dict"]
    unused = sum(torch.Size(s).numel() for k, s in official.items() if k.endswith(UNUSED))
    target = MANIFEST[key]["num_params"] - unused
    with torch.device("meta"):
        ours = sum(p.numel() for p in algnet.create_model(VARIANT_OF[key]).parameters())
    assert abs(ours - target) / target < 0.002, (ours, target)


def test_official_fa_conversion_is_exact():
    torch.manual_seed(0)
    c = 4
    sd = {"encoders.0.0.inside_all": torch.randn(c, 1, 1), "encoders.0.0.lamb_g": torch.randn(c),
          "encoders.0.0.lamb_l": torch.randn(c), "encoders.0.0.gamma": torch.randn(1, c, 1, 1),
          "encoders.0.0.conv3_2.weight": torch.randn(c, 2 * c, 1, 1), "encoders.0.0.conv3_2.bias": torch.randn(c),
          "encoders.0.0.beta": torch.randn(1, c, 1, 1)}
    out = filter_official_state_dict(sd)
    assert set(out) == {"encoders.0.0.beta", "encoders.0.0.aggregate.g", "encoders.0.0.aggregate.w"}
    fg, fl = torch.randn(2, c, 5, 5), torch.randn(2, c, 5, 5)
    official = fg * (sd["encoders.0.0.inside_all"] + 1.0) * sd["encoders.0.0.lamb_g"][None, :, None, None] + fl * sd["encoders.0.0.lamb_l"][None, :, None, None]
    ours = out["encoders.0.0.aggregate.g"] * fg + out["encoders.0.0.aggregate.w"] * fl
    torch.testing.assert_close(ours, official)
    assert "encoders.0.0.lamb_l" in sd, "the filter must not modify its input"


def tiny_model():
    torch.manual_seed(0)
    return algnet.create_model("algnet", **TINY).eval()


@pytest.mark.parametrize("wrapper", [None, "params", "params_ema", "state_dict", "model"])
@pytest.mark.parametrize("prefix", ["", "module."])
def test_wrapped_and_prefixed_pth(tmp_path, wrapper, prefix):
    model = tiny_model()
    sd = {prefix + k: v for k, v in model.state_dict().items()}
    obj = sd if wrapper is None else {wrapper: sd, "iter": 5}
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    loaded = algnet.load_checkpoint(path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_safetensors_round_trip_with_embedded_config(tmp_path):
    model = algnet.create_model("algnet_concat", **TINY)
    path = algnet.save_checkpoint(model, tmp_path / "m.safetensors")
    loaded = algnet.load_checkpoint(path)
    assert loaded.model_config == model.model_config
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[-1], model.eval()(x)[-1], rtol=0, atol=0)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_sibling_json_config(tmp_path):
    from safetensors.torch import save_file

    model = algnet.create_model("algnet_sum", **TINY)
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))
    (tmp_path / "m.json").write_text(json.dumps(model.model_config))
    assert algnet.load_checkpoint(tmp_path / "m.safetensors").model_config["name"] == "algnet_sum"


def test_inference_recognises_variants_and_nafnet():
    for name, agg in [("algnet_sum", "sum"), ("algnet_concat", "concat"), ("algnet_no_local", "global"), ("algnet_no_global", "local")]:
        config = infer_model_config(algnet.create_model(name, **TINY).state_dict())
        assert config["kwargs"]["aggregation"] == agg
    config = infer_model_config(algnet.create_model("nafnet32").state_dict())
    assert config == {"name": "nafnet32", "kwargs": {"width": 32, "enc_blocks": [1, 1, 1, 28], "mid_blocks": 1, "dec_blocks": [1, 1, 1, 1]}}


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_refuses_pickle_that_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _RunsCode(marker)}, f)
    torch.save({"state_dict": _RunsCode(marker)}, tmp_path / "evil2.pth")
    for p in (path, tmp_path / "evil2.pth"):
        with pytest.raises(CheckpointError, match="refused"):
            algnet.load_checkpoint(p)
    assert not marker.exists()


def test_truncated_and_empty_files(tmp_path):
    model = tiny_model()
    full = tmp_path / "full.pth"
    torch.save(model.state_dict(), full)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        algnet.load_checkpoint(cut)
    st = algnet.save_checkpoint(model, tmp_path / "full.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(st.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        algnet.load_checkpoint(tmp_path / "cut.safetensors")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        algnet.load_checkpoint(tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="no such"):
        algnet.load_checkpoint(tmp_path / "missing.pth")


def test_mismatched_keys_are_named():
    sd = tiny_model().state_dict()
    sd["encoders.0.0.extra.weight"] = torch.zeros(1)
    del sd["ending.bias"]
    with pytest.raises(CheckpointError) as err:
        algnet.load_checkpoint(sd)
    assert "ending.bias" in str(err.value) and "encoders.0.0.extra.weight" in str(err.value)
    with pytest.raises(CheckpointError, match="missing keys"):
        algnet.load_checkpoint(algnet.create_model("nafnet32", **TINY).state_dict(), name="algnet", **TINY)
    with pytest.raises(CheckpointError, match="intro.weight"):
        algnet.load_checkpoint({"foo": torch.zeros(2)})
