"""The GPU check's pure helpers, which run on any machine: its error measure and its timing plan."""

import math

import pytest
import torch


@pytest.fixture(scope="module")
def gpu_check(load_benchmark):
    return load_benchmark("gpu_check")


def test_relative_error_is_scaled_by_the_reference(gpu_check):
    want = torch.tensor([2.0, -4.0, 1.0], dtype=torch.float64)
    got = want + torch.tensor([0.0, 0.02, -0.01], dtype=torch.float64)
    assert gpu_check.relative_error(got, want) == pytest.approx(0.02 / 4.0, rel=1e-12)


def test_relative_error_of_an_all_zero_reference_is_absolute(gpu_check):
    # dA at L = 1 is exactly zero; a compiled kernel's fused multiply-add leaves ~1e-8 there.
    want = torch.zeros(8, 4, dtype=torch.float64)
    got = torch.full((8, 4), 9e-8, dtype=torch.float32)
    assert gpu_check.relative_error(got, want) == pytest.approx(9e-8, rel=1e-6)
    assert gpu_check.relative_error(got + 1.0, want) == pytest.approx(1.0 + 9e-8, rel=1e-6)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_relative_error_of_non_finite_output_is_infinite(gpu_check, bad):
    want = torch.ones(3, dtype=torch.float64)
    got = torch.tensor([1.0, bad, 1.0])
    assert gpu_check.relative_error(got, want) == math.inf


def _triton_rows(rows):
    return [(r.kwargs["fwd"], r.layout, r.backward) for r in rows if r.backend == "triton"]


def test_scan_plan_starts_with_both_forwards_on_the_same_inputs(gpu_check):
    for quick in (True, False):
        for first in (True, False):
            rows = _triton_rows(gpu_check.scan_plan(quick, ["chunked"], first))
            # As the network calls them (channels-last views) with backward, then contiguous.
            assert rows[:4] == [("seq", "cl", True), ("assoc", "cl", first), ("seq", "contig", False),
                                ("assoc", "contig", False)]


def test_scan_plan_quick(gpu_check):
    first = gpu_check.scan_plan(True, ["chunked"], True)
    seq_tiles = [r.kwargs for r in first[4:] if r.backend == "triton"]
    assert len(seq_tiles) >= 2 and all(kw["fwd"] == "seq" for kw in seq_tiles)
    assert len({tuple(sorted(kw.items())) for kw in seq_tiles}) == len(seq_tiles)
    assert [r.backend for r in first if r.backend != "triton"] == ["chunked"]
    second = gpu_check.scan_plan(True, ["chunked"], False)
    assert [r.backend for r in second] == ["triton"] * 4 + ["carry"]


def test_scan_plan_full_times_other_tiles_at_the_first_length_only(gpu_check):
    first = gpu_check.scan_plan(False, ["cuda", "chunked"], True)
    kwargs = [tuple(sorted(r.kwargs.items())) for r in first if r.backend == "triton"]
    assert len(kwargs) == 4 + len(gpu_check.SEQ_TILES_FULL) + len(gpu_check.ASSOC_TILES_FULL)
    assert len(set(kwargs[2:])) == len(kwargs) - 2  # the first two repeat on contiguous inputs
    assert [r.backend for r in first if r.backend != "triton"] == ["cuda", "chunked"]
    assert len(gpu_check.scan_plan(False, ["cuda"], False)) == 5


def test_scan_row_names_spell_out_the_tile(gpu_check):
    from algnet.ops import scan_triton as st

    rows = gpu_check.scan_plan(True, ["chunked"], True)
    names = [gpu_check.row_name(r, st) for r in rows]
    assert names[0] == f"triton seq {st.SEQ_BLOCK_E}x{st.CHUNK} w1 [cl]"
    assert names[1] == f"triton assoc {st.BLOCK_E}x{st.CHUNK} [cl]"
    assert "triton seq 64x128 w1 [cl]" in names and "triton seq 32x64 w1 [cl]" in names
    assert names[-1] == "chunked [contig]"
    assert len(set(names)) == len(names)


def test_network_plan_times_the_default_forward_first(gpu_check):
    plan = gpu_check.NETWORK_PLAN
    assert plan[0][:3] == ("algnet", "fp32", "seq") and not plan[0][3] and not plan[0][4]
    assert [row for row in plan if row[3]] == [("algnet", "fp32", "assoc", True, False)]  # optional, last
    assert plan[-1][3]
    for model in ("algnet", "nafnet32"):  # both models eager and as a CUDA graph, in fp32
        assert {row[4] for row in plan if row[0] == model and row[1] == "fp32" and not row[3]} == {False, True}


def test_channels_last_views_keep_values(gpu_check):
    g = torch.Generator().manual_seed(0)
    t = {k: torch.randn(2, 3, 7, generator=g) for k in ("u", "delta", "z")}
    t.update(B=torch.randn(2, 4, 7, generator=g), C=torch.randn(2, 4, 7, generator=g))
    views = gpu_check.channels_last(t)
    for k, v in views.items():
        assert torch.equal(v, t[k]), k
        assert v.stride(1) == 1 and v.stride(2) > 1, k
    assert views["B"].storage_offset() == 2 and views["B"].stride(2) == 2 + 2 * 4  # after dt's 2 columns


def test_full_check_fits_in_eight_minutes(gpu_check):
    """Each section's process is killed at its budget plus start-up: the whole check, worst case, ends under 8 minutes."""
    worst = sum(gpu_check.BUDGETS.values()) + len(gpu_check.SECTIONS) * gpu_check.STARTUP_S
    assert worst < 8 * 60, worst
