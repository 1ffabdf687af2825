"""Draw ``docs/_static/design.svg``, the diagram of ``docs/design.rst``.

Run ``python docs/make_design_diagram.py`` after changing anything below and
commit the result; ``tests/test_design_diagram.py`` fails while the committed
file differs from what this script draws. Plain SVG from the standard
library, so neither the docs build nor CI needs Graphviz.

:data:`LAYERS` is also the rule the diagram states: the test checks every
module of the package against it (each module in exactly one layer, no
import from a layer above or beside its own, nothing but the standard
library in the engine).
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

#: Where the diagram is committed.
OUTPUT = Path(__file__).resolve().parent / "_static" / "design.svg"


@dataclass(frozen=True)
class Layer:
    """One box of the layer diagram and the modules it stands for.

    ``modules`` are dotted names relative to ``trio_tlsretry``; a package
    (``testing``) stands for all of its modules. ``level`` orders the layers:
    a module may import from its own layer and from layers of a lower level,
    never from a layer of the same level (engine and transport do not know
    each other) or a higher one.
    """

    name: str
    level: int
    modules: tuple[str, ...]
    summary: tuple[str, ...]
    fill: str


LAYERS: tuple[Layer, ...] = (
    Layer(
        "engine",
        0,
        ("_engine", "_pinned"),
        (
            "all TLS state: SSLObject, both memory BIOs, the pinned",
            "write, the ciphertext queue, counters. Never awaits.",
        ),
        "#dbe8fb",
    ),
    Layer(
        "transport",
        0,
        ("_transport", "_busy_poll"),
        (
            "how bytes move, and whether a send reports exact",
            "progress: socket, exact-progress stream, any stream",
        ),
        "#dcf1e1",
    ),
    Layer(
        "stream",
        1,
        ("_stream", "_fastpath", "_details", "_locks", "_stats", "_errors", "_info"),
        (
            "TLSStream: locks, checkpoints, cancellation, the open/broken/closed state,",
            "and the one loop that moves bytes between the engine and the transport",
        ),
        "#fdf0c8",
    ),
    Layer(
        "listener and helpers",
        2,
        ("_listener", "_tcp", "_inject", "_closing"),
        (
            "TLSListener, handshake_or_drop, open_tls_over_tcp_stream, serve_tls_over_tcp,",
            "lingering_close, inject_into_trio: built on TLSStream's public methods",
        ),
        "#fbe0dc",
    ),
    Layer(
        "testing toolkit",
        4,
        ("testing", "_pytest_plugin"),
        (
            "TLS pairs, an exact-progress memory stream, fault",
            "wrappers, cancellation sweeps, a fake TCP network",
        ),
        "#ece0f8",
    ),
    Layer(
        "CLI",
        4,
        ("_cli", "_demo", "__main__"),
        (
            "the trio-tlsretry command: demo, serve, connect,",
            "built on the stream and the TCP helpers",
        ),
        "#e6e6e6",
    ),
)

#: The package itself (``__init__.py``): re-exports the public names of the
#: layers below it; only the levels above it may import it.
PACKAGE_LEVEL = 3

_LAYER = {layer.name: layer for layer in LAYERS}

# -------------------------------------------------------------- drawing

_SANS = "DejaVu Sans, Verdana, Helvetica, Arial, sans-serif"
_MONO = "DejaVu Sans Mono, Menlo, Consolas, monospace"
_INK = "#222222"
_LINE = "#555555"

WIDTH = 1000
HEIGHT = 680


class _Canvas:
    """Collects SVG elements; every coordinate is written as an integer."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def rect(
        self,
        x: int,
        y: int,
        w: int,
        h: int,
        *,
        fill: str = "#ffffff",
        stroke: str = _LINE,
        dashed: bool = False,
    ) -> None:
        dash = ' stroke-dasharray="5 4"' if dashed else ""
        self.parts.append(
            f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" '
            f'fill="{fill}" stroke="{stroke}"{dash}/>'
        )

    def text(
        self,
        x: int,
        y: int,
        text: str,
        *,
        size: int = 13,
        mono: bool = False,
        bold: bool = False,
        anchor: str = "start",
        rotate: bool = False,
    ) -> None:
        attrs = [
            f'x="{x}"',
            f'y="{y}"',
            f'font-family="{_MONO if mono else _SANS}"',
            f'font-size="{size}"',
        ]
        if bold:
            attrs.append('font-weight="bold"')
        if anchor != "start":
            attrs.append(f'text-anchor="{anchor}"')
        if rotate:
            attrs.append(f'transform="rotate(-90 {x} {y})"')
        self.parts.append(f"<text {' '.join(attrs)}>{escape(text)}</text>")

    def arrow(self, *points: tuple[int, int]) -> None:
        path = " ".join(f"{x},{y}" for x, y in points)
        self.parts.append(
            f'<polyline points="{path}" fill="none" stroke="{_LINE}" '
            f'stroke-width="1.5" marker-end="url(#head)"/>'
        )


def _module_list(layer: Layer) -> str:
    return "  ".join(f"{name}/" if name == "testing" else f"{name}.py" for name in layer.modules)


def _layer_box(canvas: _Canvas, layer: Layer, x: int, y: int, w: int, h: int) -> None:
    canvas.rect(x, y, w, h, fill=layer.fill)
    canvas.text(x + 12, y + 22, layer.name, size=15, bold=True)
    canvas.text(x + w - 12, y + 22, _module_list(layer), size=12, mono=True, anchor="end")
    for i, line in enumerate(layer.summary):
        canvas.text(x + 12, y + 44 + 17 * i, line)


def _draw_layers(canvas: _Canvas) -> None:
    canvas.text(
        20,
        28,
        "Layers: a module imports only from its own layer or a lower one",
        size=16,
        bold=True,
    )
    left, right, gap, row_h, row_gap = 60, 980, 20, 72, 12
    half = (right - left - gap) // 2
    rows = (
        (_LAYER["CLI"], _LAYER["testing toolkit"]),
        (_LAYER["listener and helpers"],),
        (_LAYER["stream"],),
        (_LAYER["engine"], _LAYER["transport"]),
    )
    y = 44
    for row in rows:
        if len(row) == 1:
            _layer_box(canvas, row[0], left, y, right - left, row_h)
        else:
            _layer_box(canvas, row[0], left, y, half, row_h)
            _layer_box(canvas, row[1], left + half + gap, y, half, row_h)
        y += row_h + row_gap
    # The direction of every import, beside the stack.
    canvas.arrow((34, 56), (34, y - row_gap - 8))
    canvas.text(26, 200, "imports point down", size=12, anchor="middle", rotate=True)


def _cell(canvas: _Canvas, x: int, w: int, y: int, label: str, *, mono: bool = False) -> None:
    canvas.rect(x, y, w, 34, fill="#ffffff")
    canvas.text(x + w // 2, y + 22, label, mono=mono, anchor="middle")


def _draw_data_flow(canvas: _Canvas) -> None:
    top = 392
    canvas.text(
        20,
        top,
        "Data flow: the stream moves every byte; engine and transport never meet",
        size=16,
        bold=True,
    )
    band_top, band_h = top + 16, 166
    send_y, receive_y = band_top + 56, band_top + 114  # cell tops of the two lanes
    send_mid, receive_mid = send_y + 17, receive_y + 17
    # Columns: the stream appears twice, on either side of the engine.
    columns = (
        ("stream", 110, 150, "_stream.py"),
        ("engine", 280, 390, "_engine.py"),
        ("stream", 690, 125, "_stream.py"),
        ("transport", 835, 125, "_transport.py"),
    )
    for name, x, w, module in columns:
        canvas.rect(x, band_top, w, band_h, fill=_LAYER[name].fill)
        canvas.text(x + w // 2, band_top + 20, name, size=15, bold=True, anchor="middle")
        canvas.text(x + w // 2, band_top + 37, module, size=12, mono=True, anchor="middle")
    canvas.text(20, band_top + 20, "your code", size=13, bold=True)

    # (x, width) of each cell, left to right; the SSLObject spans both lanes.
    api, pinned, ssl_object, bio, io_step, transport = (
        (125, 120),
        (295, 105),
        (420, 90),
        (530, 125),
        (705, 95),
        (850, 95),
    )
    left_edge, right_edge = 18, 995

    def right(cell: tuple[int, int]) -> int:
        return cell[0] + cell[1]

    # Send lane, left to right.
    _cell(canvas, *api, send_y, "send_all", mono=True)
    _cell(canvas, *pinned, send_y, "pinned write")
    _cell(canvas, *bio, send_y, "ciphertext queue")
    _cell(canvas, *io_step, send_y, "_flush", mono=True)
    _cell(canvas, *transport, send_y, "send", mono=True)
    canvas.arrow((left_edge, send_mid), (api[0] - 2, send_mid))
    for before, after in itertools.pairwise((api, pinned, ssl_object, bio, io_step, transport)):
        canvas.arrow((right(before), send_mid), (after[0] - 2, send_mid))
    canvas.arrow((right(transport), send_mid), (right_edge, send_mid))

    # Receive lane, right to left.
    _cell(canvas, *transport, receive_y, "receive", mono=True)
    _cell(canvas, *io_step, receive_y, "_receive", mono=True)
    _cell(canvas, *bio, receive_y, "incoming BIO")
    _cell(canvas, *api, receive_y, "receive_some", mono=True)
    canvas.arrow((right_edge, receive_mid), (right(transport) + 2, receive_mid))
    for before, after in ((transport, io_step), (io_step, bio), (bio, ssl_object)):
        canvas.arrow((before[0], receive_mid), (right(after) + 2, receive_mid))
    canvas.arrow((ssl_object[0], receive_mid), (right(api) + 2, receive_mid))
    canvas.arrow((api[0], receive_mid), (left_edge, receive_mid))

    x, w = ssl_object
    canvas.rect(x, send_y, w, receive_y + 34 - send_y, fill="#ffffff")
    canvas.text(x + w // 2, send_mid + 4, "SSLObject", mono=True, anchor="middle")
    canvas.text(x + w // 2, send_mid + 22, "write", size=12, anchor="middle")
    canvas.text(x + w // 2, receive_mid - 4, "read", size=12, anchor="middle")
    canvas.text(20, send_mid - 6, "plaintext")
    canvas.text(20, receive_mid - 6, "plaintext")
    canvas.text(
        (right(pinned) + pinned[0]) // 2, receive_mid - 6, "decrypted", size=12, anchor="middle"
    )
    canvas.text(978, send_mid - 8, "peer", size=12, anchor="middle")
    canvas.text(978, receive_mid - 8, "peer", size=12, anchor="middle")

    notes = (
        "Nothing inside the engine awaits; the awaits are the stream's. _flush hands the head",
        "of the ciphertext queue to the transport, _receive feeds one transport read into the",
        "incoming BIO. Cancelled at either, they lose nothing, except a send over a transport",
        "that cannot say how much it sent: that breaks the stream, and the error says why.",
    )
    for i, line in enumerate(notes):
        canvas.text(20, band_top + band_h + 24 + 18 * i, line)


def render() -> str:
    """The diagram as the text of an SVG file."""
    canvas = _Canvas()
    _draw_layers(canvas)
    _draw_data_flow(canvas)
    header = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" fill="{_INK}">\n'
        "<!-- Generated by docs/make_design_diagram.py; do not edit by hand. -->\n"
        "<title>trio_tlsretry: layers and data flow</title>\n"
        '<defs><marker id="head" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        f'<path d="M0,0 L10,5 L0,10 z" fill="{_LINE}"/></marker></defs>\n'
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>\n'
    )
    return header + "\n".join(canvas.parts) + "\n</svg>\n"


def main() -> int:
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
