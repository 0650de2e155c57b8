"""``algnet deblur``: formats, bit depths, modes and sizes come back; folders, globs; refusals."""

import numpy as np
import pytest
import torch

import algnet
from algnet.cli import main
from algnet.imageio import read_image, to_integer, write_image
from algnet.inference import restore_pixels


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = algnet.create_model("algnet", width=8, enc_blocks=(1, 1, 1, 1), mid_blocks=1, dec_blocks=(1, 1, 1, 1))
    return algnet.save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def make(path, c, bit_depth=8, h=24, w=40, seed=0):
    pixels = np.random.default_rng(seed).random((h, w, c)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_image(path, pixels, bit_depth=bit_depth)


def run(capsys, *argv):
    code = main(["deblur", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


CASES = [("rgb8.png", 3, 8), ("rgb16.png", 3, 16), ("gray8.png", 1, 8), ("gray16.tif", 1, 16), ("rgba8.png", 4, 8),
         ("rgba16.png", 4, 16), ("la8.png", 2, 8), ("photo.jpg", 3, 8), ("bgr.bmp", 3, 8)]


def test_formats_bit_depths_modes_sizes(tmp_path, capsys, checkpoint):
    inputs = [make(tmp_path / "in" / name, c, bd, h=20 + i, w=33 - i, seed=i) for i, (name, c, bd) in enumerate(CASES)]
    code, out, err = run(capsys, *inputs, "-o", tmp_path / "out", "--checkpoint", checkpoint, "--device", "cpu")
    assert code == 0, err
    assert f"deblurred {len(CASES)} images" in out and str(tmp_path / "out") in out
    model = algnet.fuse(algnet.load_checkpoint(checkpoint))  # what `algnet deblur` runs
    for src in inputs:
        a, b = read_image(src), read_image(tmp_path / "out" / src.name)
        assert (b.mode, b.bit_depth, b.format, b.pixels.shape) == (a.mode, a.bit_depth, a.format, a.pixels.shape), src.name
        if a.format in ("png", "tiff", "bmp"):  # lossless: exactly the model's output, quantised
            expected = to_integer(restore_pixels(model, a.pixels), a.bit_depth)
            np.testing.assert_array_equal(to_integer(b.pixels, b.bit_depth), expected, err_msg=src.name)
        if a.mode in ("LA", "RGBA"):
            np.testing.assert_array_equal(b.pixels[..., -1], a.pixels[..., -1])  # alpha untouched


def test_folders_globs_suffix(tmp_path, capsys, checkpoint):
    make(tmp_path / "album" / "a.png", 3)
    make(tmp_path / "album" / "sub" / "b.png", 3)
    (tmp_path / "album" / "notes.txt").write_text("not an image")
    make(tmp_path / "loose" / "c.png", 1)
    make(tmp_path / "loose" / "d.jpg", 3)
    code, out, err = run(capsys, tmp_path / "album", str(tmp_path / "loose" / "*.png"), "-o", tmp_path / "new" / "out",
                         "--checkpoint", checkpoint, "--suffix", "_sharp", "--tile", "16", "--overlap", "4")
    assert code == 0, err
    written = sorted(str(p.relative_to(tmp_path / "new" / "out")) for p in (tmp_path / "new" / "out").rglob("*") if p.is_file())
    assert written == ["a_sharp.png", "c_sharp.png", "sub/b_sharp.png"]
    assert "deblurred 3 images" in out


def test_refuses_to_overwrite_input(tmp_path, capsys, checkpoint):
    src = make(tmp_path / "x.png", 3)
    before = src.read_bytes()
    code, out, err = run(capsys, src, "-o", tmp_path, "--checkpoint", checkpoint)
    assert code == 2 and "refusing to overwrite an input" in err and str(src) in err and len(err.strip().splitlines()) == 1
    assert src.read_bytes() == before
    code, out, err = run(capsys, src, "-o", tmp_path, "--checkpoint", checkpoint, "--overwrite")
    assert code == 0 and src.read_bytes() != before


@pytest.mark.parametrize("arg", ["missing.png", "missing_folder", "nothing*.png"])
def test_missing_input_is_one_line_exit_2(tmp_path, capsys, checkpoint, arg):
    code, out, err = run(capsys, tmp_path / arg, "-o", tmp_path / "out", "--checkpoint", checkpoint)
    assert code == 2
    assert err.startswith("algnet deblur: error: ") and len(err.strip().splitlines()) == 1 and arg in err
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint(tmp_path, capsys):
    make(tmp_path / "x.png", 3)
    code, out, err = run(capsys, tmp_path / "x.png", "-o", tmp_path / "out", "--checkpoint", tmp_path / "none.safetensors")
    assert code == 2 and "none.safetensors" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                                   RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate ... out of memory"),
                                   MemoryError()])
def test_out_of_memory_suggests_tiles(tmp_path, capsys, checkpoint, monkeypatch, error):
    def boom(*args, **kwargs):
        raise error

    monkeypatch.setattr("algnet.inference.restore_pixels", boom)
    make(tmp_path / "big.png", 3)
    code, out, err = run(capsys, tmp_path / "big.png", "-o", tmp_path / "out", "--checkpoint", checkpoint)
    assert code == 2 and "out of memory" in err and "--tile 512" in err and "big.png" in err
    assert len(err.strip().splitlines()) == 1


def test_other_runtime_errors_are_not_hidden(tmp_path, capsys, checkpoint, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr("algnet.inference.restore_pixels", boom)
    make(tmp_path / "x.png", 3)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        main(["deblur", str(tmp_path / "x.png"), "-o", str(tmp_path / "out"), "--checkpoint", str(checkpoint)])


def test_tlc_half_tile_flags_reach_the_model(tmp_path, capsys, checkpoint):
    """TLC's windows (1.5 x the 256-pixel training size at each level: 384 pixels at full
    resolution) change the output only where the image is wider than them: 40x400 is, so --tlc
    alone must change it. --half and --tile must each change it as well."""
    wide = make(tmp_path / "in" / "wide.png", 3, 16, h=40, w=400)
    code, out, err = run(capsys, wide, "-o", tmp_path / "tlc", "--checkpoint", checkpoint, "--tlc")
    assert code == 0, err
    # algnet deblur runs the fused copy of each model (algnet.fuse); compare with the same.
    tlc_model = algnet.fuse(algnet.load_checkpoint(checkpoint, tlc=True))
    plain_model = algnet.fuse(algnet.load_checkpoint(checkpoint))
    pixels = read_image(wide).pixels
    got = to_integer(read_image(tmp_path / "tlc" / "wide.png").pixels, 16)
    np.testing.assert_array_equal(got, to_integer(restore_pixels(tlc_model, pixels), 16))
    assert (got != to_integer(restore_pixels(plain_model, pixels), 16)).any()

    src = make(tmp_path / "in" / "x.png", 3, 16, h=40, w=56)
    code, out, err = run(capsys, src, "-o", tmp_path / "out", "--checkpoint", checkpoint, "--tlc", "--half", "--tile", "32", "--overlap", "8")
    assert code == 0, err
    pixels = read_image(src).pixels
    got = to_integer(read_image(tmp_path / "out" / "x.png").pixels, 16)
    np.testing.assert_array_equal(got, to_integer(restore_pixels(tlc_model, pixels, tile=32, overlap=8, half=True), 16))
    assert (got != to_integer(restore_pixels(tlc_model, pixels, tile=32, overlap=8), 16)).any()  # --half mattered
    assert (got != to_integer(restore_pixels(tlc_model, pixels, half=True), 16)).any()  # --tile mattered


def test_no_fuse_runs_the_plain_model(tmp_path, capsys, checkpoint):
    """--no-fuse: exactly the plain model's output; the fused default differs from it by at most
    one 16-bit step here (float rounding)."""
    src = make(tmp_path / "in" / "x.png", 3, 16)
    code, _, err = run(capsys, src, "-o", tmp_path / "plain", "--checkpoint", checkpoint, "--no-fuse")
    assert code == 0, err
    code, _, err = run(capsys, src, "-o", tmp_path / "fused", "--checkpoint", checkpoint)
    assert code == 0, err
    pixels = read_image(src).pixels
    plain = to_integer(read_image(tmp_path / "plain" / "x.png").pixels, 16).astype(np.int64)
    np.testing.assert_array_equal(plain, to_integer(restore_pixels(algnet.load_checkpoint(checkpoint), pixels), 16))
    fused = to_integer(read_image(tmp_path / "fused" / "x.png").pixels, 16).astype(np.int64)
    assert np.abs(fused - plain).max() <= 1


def test_cuda_only_flags_leave_cpu_runs_alone(tmp_path, capsys, checkpoint):
    """--tf32 and --no-cuda-graph are accepted everywhere; on the CPU the output and PyTorch's TF32
    setting stay as without them."""
    src = make(tmp_path / "in" / "x.png", 3, 8)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    code, _, err = run(capsys, src, "-o", tmp_path / "a", "--checkpoint", checkpoint, "--device", "cpu")
    assert code == 0, err
    code, _, err = run(capsys, src, "-o", tmp_path / "b", "--checkpoint", checkpoint, "--device", "cpu", "--tf32", "--no-cuda-graph")
    assert code == 0, err
    assert torch.backends.cuda.matmul.allow_tf32 == tf32
    np.testing.assert_array_equal(read_image(tmp_path / "a" / "x.png").pixels, read_image(tmp_path / "b" / "x.png").pixels)


def test_one_input_to_an_output_file(tmp_path, capsys, checkpoint):
    """-o with an image extension writes that file (in a folder created for it), in its own format."""
    src = make(tmp_path / "in" / "x.png", 3, 16)
    dst = tmp_path / "new" / "sharp.png"
    code, out, err = run(capsys, src, "-o", dst, "--checkpoint", checkpoint)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["sharp.png"]
    model = algnet.fuse(algnet.load_checkpoint(checkpoint))  # what algnet deblur runs
    expected = to_integer(restore_pixels(model, read_image(src).pixels), 16)
    np.testing.assert_array_equal(to_integer(read_image(dst).pixels, 16), expected)
    code, out, err = run(capsys, src, "-o", tmp_path / "sharp.jpg", "--checkpoint", checkpoint)  # JPEG holds 8 bits
    assert code == 0, err
    assert (read_image(tmp_path / "sharp.jpg").format, read_image(tmp_path / "sharp.jpg").bit_depth) == ("jpeg", 8)


def test_existing_file_is_replaced(tmp_path, capsys, checkpoint):
    src = make(tmp_path / "x.png", 3)
    dst = make(tmp_path / "old.png", 3, seed=5)
    before = dst.read_bytes()
    code, out, err = run(capsys, src, "-o", dst, "--checkpoint", checkpoint)
    assert code == 0, err
    assert dst.read_bytes() != before and read_image(dst).pixels.shape == read_image(src).pixels.shape


def test_several_inputs_go_into_a_folder(tmp_path, capsys, checkpoint):
    """Several inputs: -o is a folder, new (any name without an image extension) or existing."""
    a, b = make(tmp_path / "a.png", 3), make(tmp_path / "b.png", 1)
    for out_dir in (tmp_path / "results", tmp_path / "results.v2"):
        code, out, err = run(capsys, a, b, "-o", out_dir, "--checkpoint", checkpoint)
        assert code == 0, err
        assert sorted(p.name for p in out_dir.iterdir()) == ["a.png", "b.png"]
    (tmp_path / "photos.png").mkdir()  # an existing folder, whatever its name
    code, out, err = run(capsys, a, "-o", tmp_path / "photos.png", "--checkpoint", checkpoint)
    assert code == 0, err
    assert [p.name for p in (tmp_path / "photos.png").iterdir()] == ["a.png"]


@pytest.mark.parametrize("name", ["x.png", "existing.txt"])
def test_several_inputs_to_a_file_is_one_line_error(tmp_path, capsys, checkpoint, name):
    a, b = make(tmp_path / "a.png", 3), make(tmp_path / "b.png", 3)
    (tmp_path / "existing.txt").write_text("notes")
    code, out, err = run(capsys, a, b, "-o", tmp_path / name, "--checkpoint", checkpoint)
    assert code == 2 and err.startswith("algnet deblur: error: ") and len(err.strip().splitlines()) == 1
    assert name in err
    assert not (tmp_path / "x.png").exists() and (tmp_path / "existing.txt").read_text() == "notes"


def test_output_file_that_is_the_input_is_refused(tmp_path, capsys, checkpoint):
    src = make(tmp_path / "x.png", 3)
    before = src.read_bytes()
    code, out, err = run(capsys, src, "-o", src, "--checkpoint", checkpoint)
    assert code == 2 and "refusing to overwrite an input" in err and src.read_bytes() == before
