"""``algnet app``: the page in real headless Chromium (Playwright) and the ``deblur`` endpoint
through ``gradio_client``. Every result is compared with ``algnet deblur``'s output on the same file.

Gradio, gradio_client, Playwright and Chromium are test requirements (``scripts/setup.sh`` installs
them): these tests fail, never skip, where one is missing. ALGNET_CHROMIUM names another Chromium;
ALGNET_APP_SCREENSHOT=PATH saves a screenshot of the page with a deblurred photo (docs/app.png).
"""

import io
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from playwright.sync_api import expect, sync_playwright

import algnet
from algnet.cli import main
from algnet.evaluation.shake import shake_items
from algnet.imageio import read_image, write_image

CHROMIUM = os.environ.get("ALGNET_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MAX_MEGAPIXELS = 0.2  # the server's limit: 300x451 passes, 500x500 is "huge"
SRC = Path(algnet.__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Crops of a held-out photo shaken as the demo shakes it (the shake benchmark's medium level), in
    several files: 8-bit RGB PNG and JPEG, 16-bit gray PNG, RGBA."""
    root = tmp_path_factory.mktemp("photos")
    blur = next(shake_items(0, ("medium",), per_photo=1)).blurred  # (H, W, 3) chelsea, 300x451
    crops = {
        "cat.png": blur[100:164, 150:246],
        "cat.jpg": blur[120:184, 200:296],
        "gray16.png": blur[80:144, 100:196].mean(axis=2, keepdims=True),
        "rgba.png": np.concatenate([blur[60:124, 250:346], np.linspace(0, 1, 64 * 96).reshape(64, 96, 1)], axis=2),
        "whole.png": blur,
    }
    paths = {name: write_image(root / name, px, bit_depth=16 if "16" in name else 8) for name, px in crops.items()}
    (root / "note.png").write_text("this is text, not a photo")
    paths["note.png"] = root / "note.png"
    return paths


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = algnet.create_model("algnet", width=8, enc_blocks=(1, 1, 1, 1), mid_blocks=1, dec_blocks=(1, 1, 1, 1))
    return algnet.save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """``algnet deblur``'s output file for an input (and options), computed once each, on one thread
    as the server runs: float sums split over another thread count can differ in the last 16-bit step."""
    cache = {}

    def deblurred(path: Path, *options: str) -> Path:
        key = (path, options)
        if key not in cache:
            out = tmp_path_factory.mktemp("reference")
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                assert main(["deblur", str(path), "-o", str(out), "--device", "cpu", *options]) == 0
            finally:
                torch.set_num_threads(threads)
            cache[key] = out / path.name
        return cache[key]

    return deblurred


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    """``algnet app`` in its own process on a free port, with its own temporary folder."""
    tmp = tmp_path_factory.mktemp("server-tmp")
    port = free_port()
    env = dict(os.environ, TMPDIR=str(tmp), GRADIO_TEMP_DIR=str(tmp / "gradio"), OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "algnet", "app", "--port", str(port), "--device", "cpu",
                             "--checkpoint", str(tiny_checkpoint), "--max-megapixels", str(MAX_MEGAPIXELS)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"algnet app did not start:\n{(tmp / 'server.log').read_text()}")
            time.sleep(0.5)
    yield {"url": url, "port": port, "tmp": tmp, "proc": proc}
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server["url"], verbose=False)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def assert_alive(server):
    assert server["proc"].poll() is None, (server["tmp"] / "server.log").read_text()


def leftover_temp_dirs(server, wait_s=10.0):
    """Per-request folders still there ``wait_s`` after the last response (they go just after it)."""
    deadline = time.monotonic() + wait_s
    while (left := sorted(p.name for p in server["tmp"].glob("algnet-app-*"))) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


# ----------------------------------------------------------------------------- the API endpoint


class TestEndpoint:
    def test_good_files_equal_algnet_deblur(self, client, photos, reference, server):
        for name in ("cat.png", "gray16.png", "rgba.png", "cat.jpg"):
            out = Path(client.predict(handle_file(photos[name]), api_name="/deblur"))
            assert out.name == name
            assert out.read_bytes() == reference(photos[name]).read_bytes(), name
            a, b = read_image(photos[name]), read_image(out)
            assert (b.mode, b.bit_depth, b.format, b.size) == (a.mode, a.bit_depth, a.format, a.size)
        assert leftover_temp_dirs(server) == []

    def test_options_checkpoint_and_tlc(self, client, photos, reference, tiny_checkpoint):
        out = Path(client.predict(handle_file(photos["cat.png"]), "tiny.safetensors", True, 0, api_name="/deblur"))
        assert out.read_bytes() == reference(photos["cat.png"], "--checkpoint", str(tiny_checkpoint), "--tlc").read_bytes()
        assert out.read_bytes() != reference(photos["cat.png"]).read_bytes()

    @pytest.mark.parametrize("kind", ["text", "truncated", "huge", "float32 tiff"])
    def test_bad_files_name_the_file_and_the_server_goes_on(self, kind, client, photos, reference, server, tmp_path):
        good = photos["cat.png"]
        if kind == "text":
            bad, words = photos["note.png"], "not a PNG image"
        elif kind == "truncated":
            bad, words = tmp_path / "cut.png", "truncated"
            bad.write_bytes(good.read_bytes()[:-200])
        elif kind == "huge":
            bad, words = write_image(tmp_path / "huge.png", np.zeros((500, 500, 3), np.float32)), "over the app's limit"
        else:
            import cv2

            bad, words = tmp_path / "float.tif", "unsupported sample type float32"
            cv2.imwrite(str(bad), np.zeros((8, 8, 3), np.float32))
        with pytest.raises(AppError, match=rf"{bad.name}: .*{words}"):
            client.predict(handle_file(bad), api_name="/deblur")
        assert_alive(server)
        assert Path(client.predict(handle_file(good), api_name="/deblur")).read_bytes() == reference(good).read_bytes()


# ----------------------------------------------------------------------------------- the page


def open_page(browser, server):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(server["url"])
    return context, page, requests


def upload(page, *paths):
    page.locator("#photos input[type=file]").set_input_files([str(p) for p in paths])
    for p in paths:
        expect(file_link(page, "#photos", p.name)).to_have_count(1, timeout=30_000)


def clear(page):
    page.locator("#photos button[aria-label='Clear']").first.click()
    expect(page.locator("#photos a")).to_have_count(0)


def file_link(page, where: str, name: str):
    """The link to a listed file (gr.File shows names split by extension; the link ends with the name)."""
    return page.locator(f'{where} a[href$="/{name}"]')


def status(total: int, *names: str) -> re.Pattern:
    """The page's report of a finished run (the names make it tell one run from the previous one)."""
    done = f": {re.escape(', '.join(names))}" if names else ""
    return re.compile(rf"Deblurred {len(names)} of {total} photos? in [0-9.]+ s{done}\.")


def deblur(page, expected_status: re.Pattern, timeout=120_000):
    page.locator("#deblur-button").click()
    expect(page.locator("#status")).to_contain_text(expected_status, timeout=timeout)


def download(page, name, tmp_path) -> Path:
    with page.expect_download() as info:
        file_link(page, "#downloads", name).click()
    path = tmp_path / f"{len(list(tmp_path.iterdir()))}-{name}"
    info.value.save_as(path)
    return path


def assert_offline(requests, server):
    local = f"http://127.0.0.1:{server['port']}/"
    outside = [u for u in requests if not u.startswith((local, "data:", "blob:"))]
    assert requests and outside == []


class TestPage:
    def test_deblur_and_download_equal_algnet_deblur(self, browser, server, photos, reference, tmp_path):
        context, page, requests = open_page(browser, server)
        upload(page, photos["cat.png"])
        deblur(page, status(1, "cat.png"))
        expect(page.locator("#slider img")).to_have_count(2)
        box = page.locator("#slider").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 3, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, -500)  # zooms both images together
        for img in page.locator("#slider img").all():
            expect(img).to_have_attribute("style", re.compile(r"scale\(1\.[0-9]*[1-9]"))
        got = download(page, "cat.png", tmp_path)
        assert got.read_bytes() == reference(photos["cat.png"]).read_bytes()
        np.testing.assert_array_equal(read_image(got).pixels, read_image(reference(photos["cat.png"])).pixels)
        shot = os.environ.get("ALGNET_APP_SCREENSHOT")
        if shot:  # a bigger photo, for the README
            clear(page)
            upload(page, photos["whole.png"])
            deblur(page, status(1, "whole.png"), timeout=300_000)
            expect(page.locator("#slider img")).to_have_count(2)
            page.wait_for_timeout(1000)
            page.screenshot(path=shot, full_page=True)
        assert_offline(requests, server)
        context.close()
        assert leftover_temp_dirs(server) == []

    def test_several_photos_zip_and_a_text_file(self, browser, server, photos, reference, tmp_path):
        context, page, requests = open_page(browser, server)
        upload(page, photos["cat.jpg"], photos["note.png"], photos["gray16.png"])
        deblur(page, status(3, "cat.jpg", "gray16.png"))
        expect(page.locator("#status")).to_contain_text("note.png: not a PNG image")
        archive = zipfile.ZipFile(io.BytesIO(download(page, "algnet-deblurred.zip", tmp_path).read_bytes()))
        assert sorted(archive.namelist()) == ["cat.jpg", "gray16.png"]
        for name in archive.namelist():
            assert archive.read(name) == reference(photos[name]).read_bytes(), name
        assert download(page, "gray16.png", tmp_path).read_bytes() == reference(photos["gray16.png"]).read_bytes()
        first = page.locator("#slider img").first.get_attribute("src")
        page.locator("#chooser input").click()  # the slider shows the chosen result
        page.get_by_role("option", name="gray16.png").click()
        expect(page.locator("#slider img").first).not_to_have_attribute("src", first)
        clear(page)
        upload(page, photos["note.png"])  # only bad: a message, no result
        deblur(page, status(1))
        expect(page.locator("#status")).to_contain_text("note.png: not a PNG image")
        clear(page)
        upload(page, photos["rgba.png"])  # and the next good photo works
        deblur(page, status(1, "rgba.png"))
        assert download(page, "rgba.png", tmp_path).read_bytes() == reference(photos["rgba.png"]).read_bytes()
        assert_offline(requests, server)
        context.close()

    def test_two_users_at_once_get_their_own_results(self, browser, server, photos, reference, tmp_path):
        (ctx_a, page_a, _), (ctx_b, page_b, _) = open_page(browser, server), open_page(browser, server)
        upload(page_a, photos["cat.png"])
        upload(page_b, photos["cat.jpg"])
        page_a.locator("#deblur-button").click()
        page_b.locator("#deblur-button").click()
        for page, name in ((page_a, "cat.png"), (page_b, "cat.jpg")):
            expect(page.locator("#status")).to_contain_text(status(1, name), timeout=120_000)
        assert download(page_a, "cat.png", tmp_path).read_bytes() == reference(photos["cat.png"]).read_bytes()
        assert download(page_b, "cat.jpg", tmp_path).read_bytes() == reference(photos["cat.jpg"]).read_bytes()
        expect(page_a.locator("#downloads a")).to_have_count(1)
        expect(page_b.locator("#downloads a")).to_have_count(1)
        ctx_a.close()
        ctx_b.close()


# ------------------------------------------------------------------------------ the command line


def test_missing_checkpoint_is_one_line(capsys, tmp_path):
    assert main(["app", "--checkpoint", str(tmp_path / "nope.safetensors"), "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == f"algnet app: error: {tmp_path / 'nope.safetensors'}: no such checkpoint file"


def test_missing_gradio_is_one_line(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)
    assert main(["app", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == "algnet app: error: the app needs Gradio, an optional extra: pip install 'algnet[app]'"
