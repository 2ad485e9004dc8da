"""Reliability diagram: observed frequency against predicted confidence, one curve per method."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from medssl.errors import MedsslError
from medssl.metrics.calibration import Bins


def reliability_diagram(bins_by_method: dict[str, Bins], path: str | Path, title: str | None = None) -> Path:
    """Write a reliability diagram of one or more methods as a PNG.

    Args:
        bins_by_method: ``{method name: Bins}`` (e.g. each method's bins merged over a test set).
        path: the PNG to write; its folder must exist.
        title: figure title; None: "reliability diagram".

    Returns:
        ``path`` as a Path.

    Raises:
        MedsslError: if there is no method or a method's bins hold no pixel.
    """
    fig = draw_reliability_diagram(bins_by_method, title)
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def draw_reliability_diagram(bins_by_method: dict[str, Bins], title: str | None = None) -> Figure:
    """The figure of ``reliability_diagram``.

    Top: the diagonal (perfect calibration) and, per method, each non-empty bin's frequency against its mean
    confidence, markers sized by the bin's share of pixels; the legend gives each method's ECE. Bottom: the
    share of pixels per bin, one bar group per bin (log scale: most pixels of a segmentation sit near 0).

    Args:
        bins_by_method: ``{method name: Bins}``.
        title: figure title; None: "reliability diagram".

    Returns:
        The figure (the caller closes it).

    Raises:
        MedsslError: if there is no method or a method's bins hold no pixel.
    """
    if not bins_by_method:
        raise MedsslError("reliability diagram needs the bins of at least one method")
    empty = [name for name, bins in bins_by_method.items() if bins.total == 0]
    if empty:
        raise MedsslError(f"no pixels in the bins of {empty}: compute bins over a non-empty field of view")
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, squeeze=True
    )
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    n_methods = len(bins_by_method)
    for k, (name, bins) in enumerate(bins_by_method.items()):
        colour = f"C{k}"
        full = bins.counts > 0
        share = bins.counts / bins.total
        top.plot(bins.confidence[full], bins.frequency[full], "-", color=colour, lw=1.2)
        top.scatter(
            bins.confidence[full],
            bins.frequency[full],
            s=20 + 200 * np.sqrt(share[full]),  # area grows with the share, readable for small bins too
            color=colour,
            alpha=0.8,
            clip_on=False,  # bins at 0 or 1 sit on the frame
            label=f"{name} (ECE {bins.ece():.4f})",
        )
        width = np.diff(bins.edges) / n_methods
        bottom.bar(bins.edges[:-1] + k * width, share, width=width, align="edge", color=colour, alpha=0.8)
    top.set(ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1), title=title or "reliability diagram")
    top.legend(fontsize=8, loc="upper left")
    bottom.set(xlabel="predicted confidence", ylabel="share of pixels", yscale="log")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
