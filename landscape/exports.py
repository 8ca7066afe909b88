"""Surfaces for other tools: VTK polydata (``.vtp``) for ParaView and a self-contained 3D page.

The ``.vtp`` file is VTK's XML PolyData format, written with numpy alone. The ``x`` by ``y`` grid
becomes ``nx * ny`` points ``(x[i], y[j], z[i, j])``, point ``i * ny + j`` (C order, as the
store's grids), with ``z`` the loss (log10 of it on a log scale), and ``(nx - 1) * (ny - 1)``
quadrilateral polygons ``(i, j), (i+1, j), (i+1, j+1), (i, j+1)``. Every metric of the surface
is point data (``train_loss``, ``test_error``, ...) holding the stored values exactly, NaN and
inf included; the point data array ``drawn`` is 1 where the height could be drawn. A quad with a
corner that cannot be drawn is left out (a hole), and such a point sits at the lowest drawn
height, so no NaN or inf reaches the coordinates (ParaView's bounds and camera stay finite).
Unlike tomgoldstein/loss-landscape's ``h52vtp.py``, non-square grids keep their axes, values are
written as float64 (base64 by default, so they round-trip bit for bit), and unused sections are
left out instead of written empty with ranges that do not match them.

The page is one HTML file with plotly.js inline (it works offline): one 3D surface per metric and
split, chosen from a menu, masked points left out as holes and counted in the title.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from landscape import store
from landscape.surface_plots import Panel, footer, masked_grid, panels, resolve_log

VTP_ENCODINGS = ("binary", "ascii")
HTML_DIV_ID = "landscape-surface"

_VTK_TYPES = {"f8": "Float64", "i8": "Int64", "u1": "UInt8"}


def z_metric(art: store.Artifact) -> str:
    """The grid used as height: the train loss if the surface has it, else the test loss."""
    for name in ("train/loss", "test/loss"):
        if name in art.data:
            return name
    raise ValueError(f"{art.path}: no train/loss or test/loss grid to use as height")


def grid_quads(nx: int, ny: int, keep: np.ndarray | None = None) -> np.ndarray:
    """Point indices of the quads of an ``nx`` by ``ny`` grid, one row per quad.

    Args:
        nx, ny: grid size; point ``(i, j)`` has index ``i * ny + j``.
        keep: optional boolean grid; quads with a corner where it is False are left out.

    Returns:
        An ``(n, 4)`` int64 array, corners counter-clockwise in the x-y plane.

    >>> grid_quads(2, 3).tolist()
    [[0, 3, 4, 1], [1, 4, 5, 2]]
    """
    i, j = np.meshgrid(np.arange(nx - 1), np.arange(ny - 1), indexing="ij")
    i, j = i.ravel(), j.ravel()
    quads = np.stack([i * ny + j, (i + 1) * ny + j, (i + 1) * ny + j + 1, i * ny + j + 1], axis=1)
    if keep is not None:
        flat = np.asarray(keep, dtype=bool).ravel()
        quads = quads[flat[quads].all(axis=1)]
    return quads.astype(np.int64)


def _data_array(
    name: str, values: np.ndarray, encoding: str, components: int = 1, indent: str = "        "
) -> str:
    """One ``<DataArray>``: little-endian values, base64 with a UInt64 byte count, or text."""
    values = np.ascontiguousarray(values)
    dtype = values.dtype.newbyteorder("<")
    kind = f"{dtype.kind}{dtype.itemsize}"
    head = (
        f'{indent}<DataArray type="{_VTK_TYPES[kind]}" Name={quoteattr(name)} '
        f'NumberOfComponents="{components}" format="{encoding}">'
    )
    if encoding == "binary":
        raw = values.astype(dtype).tobytes()
        body = base64.b64encode(np.uint64(len(raw)).tobytes() + raw).decode("ascii")
    elif encoding == "ascii":
        flat = values.ravel()
        body = " ".join(repr(float(v)) if dtype.kind == "f" else str(int(v)) for v in flat)
    else:
        raise ValueError(f"VTK encoding must be one of {VTP_ENCODINGS}, got {encoding!r}")
    return f"{head}\n{indent}  {body}\n{indent}</DataArray>\n"


def _comment(text: str) -> str:
    return "<!-- " + text.replace("--", "- -") + " -->\n"


def vtp_xml(
    x: np.ndarray,
    y: np.ndarray,
    height: np.ndarray,
    point_data: Mapping[str, np.ndarray],
    encoding: str = "binary",
    note: str = "",
) -> str:
    """The VTK XML PolyData text of a grid surface (see the module docstring).

    Args:
        x, y: the grid's coordinates.
        height: the ``(nx, ny)`` heights; NaN and inf points are not drawn.
        point_data: name to an ``(nx, ny)`` grid, stored as float64 point data.
        encoding: ``"binary"`` (base64 float64) or ``"ascii"`` (shortest round-tripping
            decimals, ``nan`` and ``inf`` as words, which VTK 9's reader parses); both exact.
        note: text for an XML comment at the top (what the surface is).

    Returns:
        The file's text.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    height = np.asarray(height, dtype=np.float64)
    shape = (len(x), len(y))
    if height.shape != shape:
        raise ValueError(f"height has shape {height.shape}, the grid is {shape}")
    drawn = np.isfinite(height)
    floor = height[drawn].min() if drawn.any() else 0.0
    xs, ys = np.meshgrid(x, y, indexing="ij")
    points = np.stack([xs.ravel(), ys.ravel(), np.where(drawn, height, floor).ravel()], axis=1)
    quads = grid_quads(*shape, keep=drawn)
    arrays = [_data_array("drawn", drawn.ravel().astype(np.uint8), encoding)]
    for name, values in point_data.items():
        values = np.asarray(values, dtype=np.float64)
        if values.shape != shape:
            raise ValueError(f"point data {name!r} has shape {values.shape}, the grid is {shape}")
        arrays.append(_data_array(name, values.ravel(), encoding))
    scalars = next(iter(point_data), "drawn")
    return (
        '<?xml version="1.0"?>\n'
        + (_comment(note) if note else "")
        + '<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">\n'
        + "  <PolyData>\n"
        + f'    <Piece NumberOfPoints="{len(points)}" NumberOfVerts="0" NumberOfLines="0" '
        + f'NumberOfStrips="0" NumberOfPolys="{len(quads)}">\n'
        + f"      <PointData Scalars={quoteattr(scalars)}>\n"
        + "".join(arrays)
        + "      </PointData>\n"
        + "      <Points>\n"
        + _data_array("Points", points, encoding, components=3)
        + "      </Points>\n"
        + "      <Polys>\n"
        + _data_array("connectivity", quads.ravel(), encoding)
        + _data_array("offsets", 4 * np.arange(1, len(quads) + 1, dtype=np.int64), encoding)
        + "      </Polys>\n"
        + "    </Piece>\n"
        + "  </PolyData>\n"
        + "</VTKFile>\n"
    )


def write_vtp(
    surface: str | Path,
    out: str | Path,
    log: bool | str = "auto",
    encoding: str = "binary",
) -> str:
    """Writes a surface as VTK polydata for ParaView, atomically.

    Args:
        surface: the surface HDF5 file.
        out: the ``.vtp`` file.
        log: height log10 of the loss: True, False or ``"auto"`` (as the plot set decides).
        encoding: ``"binary"`` or ``"ascii"`` (see :func:`vtp_xml`).

    Returns:
        The name of the grid used as height, e.g. ``"train/loss"``.
    """
    art = store.open(surface)
    name = z_metric(art)
    height, _ = masked_grid(art[name], resolve_log(art, log))
    data = {
        store.netcdf_name(f"{s}/{m}"): art[f"{s}/{m}"]
        for s in ("train", "test")
        for m in ("loss", "error")
        if f"{s}/{m}" in art.data
    }
    note = (
        f"{Path(surface).name}: kind {art.kind}; height {name}"
        + (" (log10)" if resolve_log(art, log) else "")
        + f"; spec {store.canonical_json(art.spec)}"
    )
    text = vtp_xml(art["x"], art["y"], height.filled(np.nan), data, encoding, note)
    store.write_bytes(out, text.encode("utf-8"))
    return name


# ----------------------------------------------------------------------------- interactive page


def _trace(x: np.ndarray, y: np.ndarray, panel: Panel, visible: bool) -> dict:
    z = panel.values.T  # plotly's z[j][i] lies at (x[i], y[j])
    return {
        "type": "surface",
        "name": panel.label,
        "x": x.tolist(),
        "y": y.tolist(),
        "z": np.where(np.ma.getmaskarray(z), None, z.data).tolist(),
        "colorscale": "Viridis",
        "colorbar": {"title": {"text": panel.label}},
        "visible": visible,
        "hovertemplate": "x %{x:.4g}<br>y %{y:.4g}<br>" + panel.label + " %{z:.6g}<extra></extra>",
    }


def _title(heading: str, panel: Panel) -> str:
    note = panel.mask_note()
    masked = f"<br><sub>{panel.masked} of {panel.values.size} points masked: {note}</sub>"
    return f"{heading}: {panel.label}" + (masked if panel.masked else "")


def figure_dict(art: store.Artifact, log: bool | str = "auto", title: str | None = None) -> dict:
    """The plotly figure (a plain dict) of a surface: one surface trace per panel, a menu."""
    items = panels(art, log)
    x, y = art["x"], art["y"]
    heading = title or art.path.stem
    traces = [_trace(x, y, p, i == 0) for i, p in enumerate(items)]
    buttons = [
        {
            "label": p.label,
            "method": "update",
            "args": [
                {"visible": [j == i for j in range(len(items))]},
                {"title": {"text": _title(heading, p)}, "scene.zaxis.title.text": p.label},
            ],
        }
        for i, p in enumerate(items)
    ]
    layout = {
        "title": {"text": _title(heading, items[0])},
        "scene": {
            "xaxis": {"title": {"text": "x"}},
            "yaxis": {"title": {"text": "y"}},
            "zaxis": {"title": {"text": items[0].label}},
        },
        "updatemenus": [{"buttons": buttons, "x": 0, "y": 1.1, "xanchor": "left"}],
        "annotations": [
            {
                "text": footer(items, "holes in the surface"),
                "showarrow": False,
                "xref": "paper",
                "yref": "paper",
                "x": 0,
                "y": -0.05,
                "xanchor": "left",
                "font": {"size": 11},
            }
        ],
        "margin": {"t": 90},
    }
    return {"data": traces, "layout": layout}


def html_page(art: store.Artifact, log: bool | str = "auto", title: str | None = None) -> str:
    """A self-contained HTML page (plotly.js inline) of :func:`figure_dict`."""
    import plotly.io as pio

    return pio.to_html(
        figure_dict(art, log, title),
        include_plotlyjs=True,
        full_html=True,
        div_id=HTML_DIV_ID,
        validate=False,
        config={"displaylogo": False, "responsive": True},
    )


def write_html(
    surface: str | Path, out: str | Path, log: bool | str = "auto", title: str | None = None
) -> None:
    """Writes :func:`html_page` of a surface, atomically."""
    store.write_bytes(out, html_page(store.open(surface), log, title).encode("utf-8"))

