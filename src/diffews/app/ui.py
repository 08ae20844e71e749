"""The Gradio page of `diffews app`: widgets and their wiring to `diffews.app.callbacks`."""

from __future__ import annotations

import functools
import html
import os
from collections.abc import Callable
from pathlib import Path

# The app must not reach the internet: no telemetry, also for what Gradio reads at import.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr  # noqa: E402

from ..errors import InputError  # noqa: E402
from ..processing.images import IMAGE_SUFFIXES  # noqa: E402
from ..processing.thresholds import THRESHOLD_MODES  # noqa: E402
from ..pipeline import DiffewSPipeline  # noqa: E402
from . import callbacks  # noqa: E402

TITLE = "diffews: few-shot segmentation"
INTRO = """\
Give one to five **support** examples of a class (an image and its mask: upload a mask, or paint the
object on the image with the brush), then drop in **query** images: DiffewS segments that class in
each. The support set is encoded once and reused until you change it; moving the threshold
re-thresholds the last results without running the model again. Under **More classes**, name each
class and give it its own examples: the results are then label maps (with a colour legend) and a
COCO annotation file.
"""
THRESHOLD_STEP = 0.005
"""The threshold slider's step: fine enough for a model's stored value (the built-in model's 0.005) to sit on it."""
# System fonts only: the default theme's web fonts would make the browser reach the internet.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def default_examples_dir() -> Path | None:
    """The ``examples/`` folder of a source checkout (where the shipped example images live), if present."""
    folder = Path(__file__).resolve().parents[3] / "examples"
    return folder if (folder / "support").is_dir() and (folder / "query").is_dir() else None


def _user_errors(fn: Callable) -> Callable:
    """Show `InputError`s as a message in the page (no stack trace anywhere)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as error:
            raise gr.Error(html.escape(str(error)), print_exception=False) from None

    return wrapper


def build_app(
    pipe: DiffewSPipeline, model_name: str, output_root: Path, examples_dir: Path | None = None, batch_size: int = 4
) -> gr.Blocks:
    """The app's page for `pipe`; result files are written under `output_root` (one folder per session)."""
    config = pipe.model.config
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        session_state = gr.State(None)
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        notice = callbacks.model_notice(model_name)
        if notice:
            gr.Markdown(f"**Warning:** {notice}", elem_id="model-notice")
        # Filled by the page's load event: once it shows, the page is connected and its buttons work.
        status = gr.Markdown("Connecting to the server…", elem_id="model-status")
        panels: list[tuple[gr.Textbox, list, list]] = []  # per class: name box, image editors, mask uploads
        with gr.Row(equal_height=False):
            with gr.Column():
                gr.Markdown("## Support examples")
                panels.append(_class_panel(1, "Class name (needed with several classes)"))
                with gr.Accordion("More classes (label maps and a COCO file)", open=False):
                    for index in range(2, callbacks.MAX_CLASSES + 1):
                        panels.append(_class_panel(index, f"Class {index} name"))
            with gr.Column():
                gr.Markdown("## Query images")
                with gr.Tabs():
                    with gr.Tab("Files"):
                        query_files = gr.File(label="Query images", file_count="multiple", file_types=sorted(IMAGE_SUFFIXES), elem_id="query-files")
                    with gr.Tab("Folder"):
                        query_folder = gr.File(label="Folder of query images", file_count="directory", elem_id="query-folder")
                segment_button = gr.Button("Segment", variant="primary", elem_id="segment")
                mode = gr.Radio(
                    list(THRESHOLD_MODES), value=config.threshold_mode, label="Threshold mode",
                    info="relative: foreground where p > T x max(p) of that image; absolute: p > T; "
                    "authors: the authors' evaluation rule (8-bit, channel mean > T x the largest channel value)",
                )
                threshold = gr.Slider(0.0, 1.0, value=config.threshold, step=THRESHOLD_STEP, label="Threshold T")
        gr.Markdown("## Results")
        legend_box = gr.HTML(elem_id="legend")
        gallery = gr.Gallery(label="Overlays", columns=4, fit_columns=False, height="auto", object_fit="contain", format="png", elem_id="overlays")
        with gr.Row():
            mask_files = gr.File(label="Masks or label maps (PNG, one per query)", file_count="multiple", interactive=False, elem_id="mask-files")
            zip_file = gr.File(label=f"All files ({callbacks.ZIP_NAME} / {callbacks.LABELS_ZIP_NAME})", interactive=False, elem_id="mask-zip")
            coco_file = gr.File(label=f"COCO annotations ({callbacks.COCO_NAME}, several classes)", interactive=False, elem_id="coco-file")
        editors, mask_uploads = panels[0][1], panels[0][2]
        if examples_dir is not None:
            _add_examples(examples_dir, editors, mask_uploads, query_files)

        def show(session: callbacks.Session, value: float, threshold_mode: str):
            shown = callbacks.render_results(session, value, threshold_mode, output_root / session.key)
            coco = str(shown.coco_file) if shown.coco_file else None
            return session, shown.gallery, [str(p) for p in shown.mask_files], str(shown.zip_file), coco, _legend_html(shown.legend)

        @_user_errors
        def run(data: dict, progress=gr.Progress()):
            classes = [
                (data[name], [
                    callbacks.support_pair(shot, *_editor_parts(data[editor]), data[mask], None if number == 1 else f"class {number}")
                    for shot, (editor, mask) in enumerate(zip(class_editors, class_masks), 1)
                ])
                for number, (name, class_editors, class_masks) in enumerate(panels, 1)
            ]
            named = callbacks.collect_classes(classes)
            # The examples are checked before the queries: a first-time user sees what to add first.
            pairs = callbacks.collect_support(classes[0][1]) if named is None else None
            queries = callbacks.query_paths([*(data[query_files] or []), *(data[query_folder] or [])])
            session = data[session_state] or callbacks.Session()
            report = lambda f, d: progress(f, desc=d)  # noqa: E731
            if pairs is not None:
                session = callbacks.segment(pipe, session, pairs, queries, batch_size, progress=report)
            else:
                session = callbacks.segment_classes(pipe, session, named, queries, batch_size, progress=report)
            return show(session, data[threshold], data[mode])

        @_user_errors
        def rethreshold(session: callbacks.Session | None, value: float, threshold_mode: str):
            if session is None or not session.results:
                return (gr.skip(),) * 6
            return show(session, value, threshold_mode)

        outputs = [session_state, gallery, mask_files, zip_file, coco_file, legend_box]
        panel_inputs = {component for name, class_editors, class_masks in panels for component in (name, *class_editors, *class_masks)}
        # one queue for the three: each writes the session's files and removes the others' (not two at once)
        writes_files = {"concurrency_id": "session-files", "concurrency_limit": 1}
        segment_button.click(
            run, inputs={session_state, threshold, mode, query_files, query_folder, *panel_inputs}, outputs=outputs, **writes_files
        )
        threshold.release(rethreshold, inputs=[session_state, threshold, mode], outputs=outputs, show_progress="hidden", **writes_files)
        mode.change(rethreshold, inputs=[session_state, threshold, mode], outputs=outputs, show_progress="hidden", **writes_files)
        demo.load(lambda: callbacks.model_status(model_name, config.resolution), outputs=status, show_progress="hidden")
    return demo


def _class_panel(index: int, name_label: str) -> tuple[gr.Textbox, list, list]:
    """Class `index`'s widgets: its name box and one image editor + mask upload per example.
    Class 1 keeps the element ids of the one-class page (``support-image-<shot>``)."""
    prefix = "" if index == 1 else f"{index}-"
    name = gr.Textbox(label=name_label, max_lines=1, elem_id=f"class-name-{index}")
    editors, masks = [], []
    with gr.Tabs():
        for shot in range(1, callbacks.MAX_SHOTS + 1):
            with gr.Tab(f"Example {shot}"):
                editors.append(
                    gr.ImageEditor(
                        label=f"Image {shot}: paint the object, or upload its mask below",
                        type="pil", image_mode="RGBA", format="png", sources=["upload", "clipboard"],
                        brush=gr.Brush(colors=["#ff2828"], color_mode="fixed"), layers=False,
                        transforms=(), elem_id=f"support-image-{prefix}{shot}",
                    )
                )
                masks.append(
                    gr.Image(
                        label=f"Mask {shot} (white = object)", type="filepath", image_mode=None,
                        sources=["upload"], height=240, elem_id=f"support-mask-{prefix}{shot}",
                    )
                )
    return name, editors, masks


def _legend_html(entries: list[tuple[str, str]]) -> str:
    """The classes' colours as swatches (empty for one class)."""
    items = "".join(
        f'<span style="margin-right:1em"><span style="display:inline-block;width:0.9em;height:0.9em;'
        f'background:{color};border:1px solid #000;vertical-align:middle"></span> {html.escape(name)}</span>'
        for name, color in entries
    )
    return f"<div>{items}</div>" if entries else ""


def _editor_parts(value: dict | None) -> tuple:
    """ImageEditor value -> (background image or None, brush layers)."""
    if not value:
        return None, []
    return value.get("background"), value.get("layers") or []


def example_files(folder: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """An examples folder's (support image, mask) pairs, ``support/IMG.jpg`` with ``support/IMG_mask.png``
    (at most `callbacks.MAX_SHOTS`), and its ``query/*.jpg`` images."""
    supports = sorted(p for p in (folder / "support").glob("*.jpg"))
    queries = [str(p) for p in sorted((folder / "query").glob("*.jpg"))]
    pairs = [(image, image.with_name(f"{image.stem}_mask.png")) for image in supports]
    return [(str(image), str(mask)) for image, mask in pairs if mask.is_file()][: callbacks.MAX_SHOTS], queries


def _add_examples(folder: Path, editors: list, mask_uploads: list, query_files: gr.File) -> None:
    """Pre-filled examples from the shipped images: every support pair with all queries."""
    pairs, queries = example_files(folder)
    if not pairs or not queries:
        return
    shots = len(pairs)
    row = [value for pair in pairs for value in pair] + [queries]
    inputs = [component for pair in zip(editors[:shots], mask_uploads[:shots]) for component in pair] + [query_files]
    gr.Examples([row], inputs=inputs, label="Example: a held-out icon class (shipped images)", cache_examples=False)


def launch(demo: gr.Blocks, host: str, port: int | None, output_root: Path) -> str:
    """Start serving `demo` (no share link, no browser); returns the local URL.

    Gradio checks the server with HTTP requests to it: the addresses it uses are added to ``NO_PROXY`` so
    that a proxy set for the internet does not catch them."""
    for name in ("NO_PROXY", "no_proxy"):
        entries = [entry for entry in os.environ.get(name, "").split(",") if entry]
        os.environ[name] = ",".join(dict.fromkeys([*entries, "127.0.0.1", "localhost", host]))
    demo.queue(default_concurrency_limit=1)
    _, url, _ = demo.launch(
        server_name=host, server_port=port, share=False, inbrowser=False, quiet=True, prevent_thread_lock=True,
        show_error=False, theme=THEME, allowed_paths=[str(output_root)], footer_links=[],
    )
    return url
