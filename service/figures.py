"""Drawing the figures the service serves (a job's plots, a sweep's chart) as PNG bytes,
every string in them drawn as written.

Class, tag and dataset names, grid values and the like are the client's text, and
matplotlib reads a string with two `$` in it as mathtext (and, under `text.usetex`,
every string as TeX): `$\\frac{$` would fail the drawing, and `$x$` would come out as
a formula. So before a figure is drawn, every text in it is set to plain text. Our own
labels use no mathtext either (the sweep chart's "±" is a Unicode character).

Imported only where a figure is drawn: matplotlib takes a while to import.
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure
from matplotlib.text import Text


def plain_text(figure: Figure) -> None:
    """Draw every text of the figure as written: titles, axis labels, tick labels,
    legends, annotations. Call it once the figure is built, before it is drawn (a layout
    pass draws too): tick labels given as strings exist by then, and those matplotlib
    makes while drawing are numbers."""
    for text in figure.findobj(Text):
        assert isinstance(text, Text)  # findobj's match narrows nothing for mypy
        text.set_usetex(False)
        text.set_parse_math(False)


def png(figure: Figure, dpi: int) -> bytes:
    """The figure as a PNG, its texts plain (plain_text)."""
    plain_text(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
