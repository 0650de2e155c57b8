"""``algnet app``: the deblurring tool as a web page on this computer (Gradio), fully offline.

The page takes one or several photos, deblurs them with a chosen checkpoint (TLC and tiling
optional), shows each result beside its input under a before/after slider, and offers every result
for download, in its input's format, bit depth, mode and size, and all of them as one zip. The
files are written by :func:`algnet.apps.deblur.deblur_file`, the code path of ``algnet deblur``,
so a download equals ``algnet deblur``'s output byte for byte.

The same work is a named API endpoint, ``deblur`` (an image file in, the deblurred file out; the
other inputs default to the page's), for scripts using ``gradio_client``.

Offline and private by construction: the server binds to 127.0.0.1 unless ``--host`` says
otherwise, never opens a share link, sends no analytics and uses system fonts only. One inference
runs at a time (a queue shared by the page and the API); each request works in its own temporary
folder, removed when its files have been handed to Gradio, and Gradio's copies of uploads and
results are deleted after an hour. Gradio is an optional extra: ``pip install 'algnet[app]'``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AlgnetError

# Images above this are refused: the shipped checkpoint's whole-image inference peaks at about
# 0.85 GB per megapixel on the CPU, so 12 MP (a 4000 x 3000 photo) stays near 10 GB, well inside a
# 24 GB machine. Bigger images: ``algnet deblur --tile``.
DEFAULT_MAX_MEGAPIXELS = 12.0
TILE_CHOICES = [("off (whole image)", 0), ("1024 px", 1024), ("512 px", 512), ("256 px", 256)]
CACHE_LIFETIME_S = 3600  # Gradio's copies of uploads and results are deleted after this
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
ZIP_NAME = "algnet-deblurred.zip"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "app", help="the deblurring tool as a local web page (needs algnet[app])",
        description="Serve a web page on this computer that deblurs photos: before/after slider, downloads in "
                    "each input's own format, a zip of all results, and a 'deblur' API endpoint for "
                    "gradio_client. Works with no network; binds to 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="CKPT",
                   help="offer this checkpoint too, by its file name (repeatable); the shipped one is always offered")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: cuda if available")
    p.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS, metavar="N",
                   help=f"refuse larger images (default {DEFAULT_MAX_MEGAPIXELS:g})")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------ the work, no Gradio


def checkpoint_choices(extra: list[str]) -> dict[str, Path]:
    """File name -> path: the shipped checkpoint first, then each ``--checkpoint``; names must differ."""
    from ..inference import default_checkpoint_path

    paths = [default_checkpoint_path()] + [Path(p) for p in extra]
    choices: dict[str, Path] = {}
    for path in paths:
        if not path.is_file():
            raise AlgnetError(f"{path}: no such checkpoint file")
        if path.name in choices and choices[path.name].resolve() != path.resolve():
            raise AlgnetError(f"{path} and {choices[path.name]} have the same file name; rename one (the page lists checkpoints by file name)")
        choices.setdefault(path.name, path)
    return choices


def preview(pixels: np.ndarray) -> np.ndarray:
    """float (H, W, C) pixels -> 8-bit RGB(A) for the browser (gray replicated, alpha kept)."""
    from ..imageio import to_integer

    ints = to_integer(pixels, 8)
    if ints.shape[2] <= 2:  # L, LA -> RGB, RGBA
        ints = ints[..., [0, 0, 0, 1][: ints.shape[2] + 2]]
    return ints


def check_megapixels(path: Path, max_megapixels: float) -> None:
    """Refuses an image over ``max_megapixels`` before the model runs; from its header where Pillow
    can read it, else after decoding it."""
    from ..imageio import read_image

    from PIL import Image as PILImage

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(path) as im:
                w, h = im.size
    except PILImage.DecompressionBombError:
        raise AlgnetError(f"{path}: the image is far larger than {max_megapixels:g} megapixels, the app's limit; "
                          f"deblur it with `algnet deblur --tile 512`") from None
    except Exception:  # noqa: BLE001 - not for Pillow: read_image measures it or says precisely what is wrong
        h, w = read_image(path).size
    if w * h > max_megapixels * 1e6:
        raise AlgnetError(f"{path}: {w}x{h} is {w * h / 1e6:.3g} megapixels, over the app's limit of {max_megapixels:g} "
                          f"(--max-megapixels); deblur it with `algnet deblur --tile 512`")


@dataclass
class Result:
    name: str            # the input's file name
    path: Path           # the deblurred file, as algnet deblur writes it
    before: np.ndarray   # 8-bit previews for the slider
    after: np.ndarray


class Deblurrer:
    """Checkpoints by name, models loaded once each, and the file-to-file work of one image."""

    def __init__(self, checkpoints: list[str], device: str = "auto", max_megapixels: float = DEFAULT_MAX_MEGAPIXELS):
        from ..inference import resolve_device

        if max_megapixels <= 0:
            raise AlgnetError(f"--max-megapixels {max_megapixels:g}: must be positive")
        self.checkpoints = checkpoint_choices(checkpoints)
        self.device = resolve_device(device)
        self.max_megapixels = max_megapixels
        self._models: dict[tuple[str, bool], object] = {}
        for name in self.checkpoints:  # a bad checkpoint fails at start-up, not at the first photo
            self.model(name, tlc=False)

    def model(self, name: str, tlc: bool):
        from ..inference import load_model

        if name not in self.checkpoints:
            raise AlgnetError(f"unknown checkpoint {name!r}; choose one of {', '.join(self.checkpoints)}")
        key = (name, bool(tlc))
        if key not in self._models:
            # Eager on CUDA too: a captured graph per image size would keep growing in a server.
            self._models[key] = load_model(self.checkpoints[name], device=self.device, tlc=bool(tlc))
        return self._models[key]

    def deblur(self, src: Path, out_dir: Path, checkpoint: str, tlc: bool, tile: int | None) -> Result:
        """Deblurs ``src`` into ``out_dir / src.name``; errors name the file by its own name."""
        from .deblur import deblur_file

        tile = int(tile or 0)
        if tile and tile < 16:
            raise AlgnetError(f"tile {tile}: tiles must be at least 16 pixels (0 = whole image)")
        check_megapixels(src, self.max_megapixels)
        model = self.model(checkpoint, tlc)
        dst = out_dir / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        image, restored = deblur_file(model, src, dst, self.device, tile=tile or None)
        return Result(src.name, dst, preview(image.pixels), preview(restored))


def zip_results(results: list[Result], path: Path) -> Path:
    """One zip of all results; a name that repeats gets " (2)", " (3)" ... before its extension."""
    seen: dict[str, int] = {}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for r in results:
            n = seen[r.name] = seen.get(r.name, 0) + 1
            stem, ext = os.path.splitext(r.name)
            zf.write(r.path, r.name if n == 1 else f"{stem} ({n}){ext}")
    return path


def _short(message: str, path: Path) -> str:
    """An error about an uploaded file, naming it by its own name rather than Gradio's cache path."""
    return message.replace(str(path), path.name)


# ------------------------------------------------------------------------------------- the page


def import_gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read when gradio is imported
    try:
        import gradio
    except ModuleNotFoundError as err:
        if err.name != "gradio":
            raise
        raise AlgnetError("the app needs Gradio, an optional extra: pip install 'algnet[app]'") from None
    return gradio


def theme():
    gr = import_gradio()
    return gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)


def build_app(deblurrer: Deblurrer):
    """The Gradio Blocks of the page and the ``deblur`` endpoint (not launched)."""
    gr = import_gradio()
    from ..imageio import IMAGE_EXTENSIONS

    names = list(deblurrer.checkpoints)

    def deblur_page(files, checkpoint, tlc, tile, progress=gr.Progress()):
        if not files:
            raise gr.Error("Add one or more photos first.", print_exception=False)
        start = time.perf_counter()
        results, errors = [], []
        with tempfile.TemporaryDirectory(prefix="algnet-app-") as tmp:
            for i, f in enumerate(files):
                src = Path(f)
                progress((i, len(files)), desc=f"deblurring {src.name}", unit="photos")
                try:
                    results.append(deblurrer.deblur(src, Path(tmp) / str(i), checkpoint, tlc, tile))
                except AlgnetError as err:
                    errors.append(_short(str(err), src))
                except Exception as err:  # noqa: BLE001 - one bad photo must not end the others' work
                    errors.append(f"{src.name}: failed: {type(err).__name__}: {err}")
            seconds = time.perf_counter() - start
            downloads = [str(r.path) for r in results]
            if len(results) > 1:
                downloads.append(str(zip_results(results, Path(tmp) / ZIP_NAME)))
            done = f": {', '.join(r.name for r in results)}" if results else ""
            lines = [f"Deblurred {len(results)} of {len(files)} photo{'s' * (len(files) != 1)} in {seconds:.1f} s{done}."]
            lines += [f"- **Not deblurred:** {e}" for e in errors]
            shown = [(r.name, r.before, r.after) for r in results]
            first = (shown[0][1], shown[0][2]) if shown else None
            # Yielded, not returned: the folder is removed only after Gradio has copied the files.
            yield ("\n".join(lines), first, gr.update(choices=[r.name for r in results], value=results[0].name if results else None,
                                                      visible=len(results) > 1),
                   downloads or None, shown)

    def show(name, shown):
        for n, before, after in shown:
            if n == name:
                return (before, after)
        return None

    def deblur_api(image, checkpoint, tlc, tile):
        if not image:
            raise gr.Error("no image file was given", print_exception=False)
        src = Path(image)
        with tempfile.TemporaryDirectory(prefix="algnet-app-") as tmp:
            try:
                result = deblurrer.deblur(src, Path(tmp), checkpoint, tlc, tile)
            except AlgnetError as err:
                raise gr.Error(_short(str(err), src), print_exception=False) from None
            yield str(result.path)

    with gr.Blocks(title="ALGNet deblurring", analytics_enabled=False, delete_cache=(CACHE_LIFETIME_S // 4, CACHE_LIFETIME_S)) as app:
        gr.Markdown("## ALGNet deblurring\nEverything runs on this computer: photos are not sent anywhere.")
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="Photos", file_count="multiple", file_types=list(IMAGE_EXTENSIONS), elem_id="photos")
                checkpoint = gr.Dropdown(names, value=names[0], label="Checkpoint", elem_id="checkpoint")
                tlc = gr.Checkbox(False, label="TLC (test-time local converter, the paper's '-local')", elem_id="tlc")
                tile = gr.Dropdown(TILE_CHOICES, value=0, label="Tiling (bounds memory on big photos)", elem_id="tile")
                button = gr.Button("Deblur", variant="primary", elem_id="deblur-button")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="status")
                slider = gr.ImageSlider(label="Before / after", type="numpy", format="png", image_mode=None,
                                        interactive=False, elem_id="slider", max_height=640)
                chooser = gr.Dropdown([], label="Show", visible=False, elem_id="chooser")
                downloads = gr.File(label="Downloads: each result in its input's format, and a zip of all",
                                    file_count="multiple", interactive=False, elem_id="downloads")
        shown = gr.State([])
        button.click(deblur_page, [files, checkpoint, tlc, tile], [status, slider, chooser, downloads, shown],
                     concurrency_id="inference", concurrency_limit=1, api_visibility="private")
        # .input, not .change: a new run sets the chooser itself, and re-sending the same preview
        # would make Gradio rewrite the file the browser is reading.
        chooser.input(show, [chooser, shown], slider, api_visibility="private", queue=False)
        with gr.Row(visible=False):  # the endpoint's own ports; its other inputs are the page's
            api_image = gr.File(label="image", file_types=list(IMAGE_EXTENSIONS))
            api_result = gr.File(label="deblurred")
            api_button = gr.Button()
        api_button.click(deblur_api, [api_image, checkpoint, tlc, tile], api_result, api_name="deblur",
                         concurrency_id="inference", concurrency_limit=1)
    return app


def run(args: argparse.Namespace) -> int:
    import_gradio()
    deblurrer = Deblurrer(args.checkpoint, device=args.device, max_megapixels=args.max_megapixels)
    app = build_app(deblurrer)
    app.queue(default_concurrency_limit=1)
    print(f"algnet app: http://{args.host}:{args.port} (device {deblurrer.device.type}; Ctrl+C stops it)", flush=True)
    try:
        app.launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False, quiet=True,
                   ssr_mode=False, theme=theme(), footer_links=["api"], max_file_size="1gb")
    except OSError:  # Gradio's message names its own settings, not ours
        raise AlgnetError(f"cannot serve on {args.host}:{args.port}; is the port in use? choose another with --port") from None
    return 0
