"""``medssl segment``: run a label-free method over images and write one cluster map per image.

Output folder:
- ``<stem><suffix>``: the cluster map of each input, same size (and geometry) as the input; clusters ``1..K``
  from darkest to brightest, 0 outside the detected field of view and on excluded artefacts. PNG for pictures
  (lossless formats keep their suffix, as ``medssl predict`` does);
- ``selected/<stem>.png``: the mask a no-ground-truth rule picks (``lesion`` unless ``select`` names another),
  0/255;
- ``overlays/page_XX.png``: every image with its clusters filled in colour, nine per page;
- ``config.yaml``: the resolved settings; ``run.json``: per image the iterations, seconds and cluster sizes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from medssl.data.check import nonfinite_problem
from medssl.data.geometry import ImageMeta
from medssl.data.io import read_image, write_image
from medssl.data.layouts import discover_inputs
from medssl.data.loading import bad_inputs_error, print_skipped_inputs
from medssl.engine.plots import OverlayCase, save_overlays
from medssl.engine.run_folder import prepare_output_dir, progress_bar, save_json
from medssl.errors import MedsslError
from medssl.labelfree.config import LabelFreeConfig, label_free_method
from medssl.labelfree.preprocess import image_lightness
from medssl.labelfree.protocols import DEFAULT_RULE, cluster_protocol, cluster_protocols, select_mask
from medssl.labelfree.regions import ClusterResult
from medssl.segment.predict import output_suffix, prediction_name

_PER_PAGE = 9


@dataclass
class SegmentResult:
    """What ``segment_folder`` wrote.

    Attributes:
        out_dir: the output folder.
        maps: the cluster maps written, in input order.
        overlays: the overlay pages.
        records: per image ``{"case", "iterations", "seconds", "cluster_sizes", ...}``.
        skipped: input -> its problem, for the inputs left out (``skip_bad_inputs``).
    """

    out_dir: Path
    maps: list[Path] = field(default_factory=list)
    overlays: list[Path] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def segment_image(image: npt.NDArray[np.generic], method: str, config: LabelFreeConfig) -> ClusterResult:
    """Run the registered label-free ``method`` (e.g. ``s3``, ``kmeans``) with its ``config`` on a ``(C, H, W)``
    picture."""
    chosen = label_free_method(method)
    if not isinstance(config, chosen.config):
        raise MedsslError(f"method {method!r} does not match settings of type {type(config).__name__}")
    return chosen.segment(image, config)


def segment_folder(
    input_path: str | Path,
    out: str | Path,
    method: str,
    config: LabelFreeConfig,
    *,
    select: str | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    skip_bad_inputs: bool = False,
) -> SegmentResult:
    """Segment every image under ``input_path`` and write the cluster maps, overlays and records to ``out``.

    Every input is read and checked first (readable, finite, 2D, 1 or 3 channels), so that a bad one stops the
    command before anything is written; pictures are small, so they are simply read again to be segmented.

    Args:
        input_path: an image or a folder of images (2D pictures or 2D NIfTI/NRRD/MHA; 1 or 3 channels).
        out: output folder; an existing non-empty one is refused unless ``overwrite``.
        method: a registered label-free method (``s3``, ``kmeans``).
        config: the method's resolved settings.
        select: the no-ground-truth rule whose mask is written into ``selected/`` (``lesion``, ``border``,
            ``darkest``); None: ``DEFAULT_RULE`` (``lesion``).
        overwrite: replace an existing output folder.
        quiet: no progress bar.
        skip_bad_inputs: leave out the inputs that would be refused (listed at the end and in ``run.json``).

    Returns:
        The ``SegmentResult``.

    Raises:
        MedsslError: no input image, an input that is unreadable, holds NaN/inf, is 3D or has other than 1 or 3
            channels (unless ``skip_bad_inputs``), an unknown rule, or an existing output.
    """
    select = select or DEFAULT_RULE
    inputs, bad = _usable_inputs(Path(input_path), select, quiet=quiet, skip_bad_inputs=skip_bad_inputs)
    out_dir = prepare_output_dir(out, kind="segment", overwrite=overwrite, inputs=(input_path,))
    (out_dir / "config.yaml").write_text(
        yaml.safe_dump({"method": method, **dataclasses.asdict(config)}, sort_keys=False)
    )
    result = SegmentResult(out_dir, skipped=bad)
    page: list[OverlayCase] = []
    for path in progress_bar(quiet)(inputs, f"{method} segmentation"):
        map_path, record, case = _segment_one(path, out_dir, method, config, select)
        result.maps.append(map_path)
        result.records.append(record)
        page.append(case)
        if len(page) == _PER_PAGE:
            result.overlays.append(_save_page(page, config.most_clusters, out_dir, len(result.overlays) + 1))
            page = []
    if page:
        result.overlays.append(_save_page(page, config.most_clusters, out_dir, len(result.overlays) + 1))
    save_json(out_dir / "run.json", {"method": method, "images": result.records, "skipped": bad})
    print_skipped_inputs(bad)
    return result


def _usable_inputs(
    input_path: Path, select: str | None, *, quiet: bool, skip_bad_inputs: bool
) -> tuple[list[Path], dict[str, str]]:
    """The inputs to segment and the left-out ones (input -> its problem), after checking the selection rule and
    reading every input once.

    Raises:
        MedsslError: an unknown ``select`` rule, no input, or a bad input unless ``skip_bad_inputs``.
    """
    rules = cluster_protocols(without_truth=True)
    if select is not None and select not in rules:
        raise MedsslError(f"unknown selection rule {select!r}; choose one of {', '.join(rules)}")
    inputs = discover_inputs(input_path)
    bad = _check_inputs(inputs, quiet)
    if bad and not skip_bad_inputs:
        raise bad_inputs_error(bad, len(inputs))
    return [path for path in inputs if str(path) not in bad], bad


def _segment_one(
    path: Path, out_dir: Path, method: str, config: LabelFreeConfig, select: str
) -> tuple[Path, dict[str, Any], OverlayCase]:
    """Segment one input and write its cluster map and the mask the ``select`` rule picks.

    Returns:
        The map's path, the image's ``run.json`` record and its case for the overlay pages.
    """
    image, meta = read_image(path)
    clusters = segment_image(image, method, config)
    name = prediction_name(path)
    map_path = out_dir / f"{name}{output_suffix(meta.source)}"
    write_image(map_path, clusters.labels.astype(np.uint8), meta)
    record = _record(name, clusters)
    chosen, mask = _select(select, clusters, image)
    write_image(out_dir / "selected" / f"{name}.png", (mask * 255).astype(np.uint8), meta)
    record["selected_rule"] = select
    record["selected_cluster"] = chosen
    return map_path, record, _overlay_case(name, image, clusters.labels, config.most_clusters, meta.physical)


def input_problem(image: npt.NDArray[np.generic], meta: ImageMeta, name: str) -> str | None:
    """Why label-free segmentation cannot take this image, in one line naming it; None when it can."""
    problem = nonfinite_problem(image, name)
    if problem:
        return problem
    if meta.ndim != 2:
        return f"{name}: label-free segmentation takes 2D images, this one is {meta.ndim}D"
    if image.shape[0] not in (1, 3):
        return f"{name}: label-free segmentation takes pictures with 1 or 3 channels, this one has {image.shape[0]}"
    return None


def _check_inputs(inputs: list[Path], quiet: bool) -> dict[str, str]:
    """Input -> its problem, for the inputs that would be refused (each read once; nothing is kept)."""
    bad: dict[str, str] = {}
    for path in progress_bar(quiet)(inputs, "checking inputs"):
        try:
            image, meta = read_image(path)
        except MedsslError as exc:
            bad[str(path)] = str(exc)
            continue
        problem = input_problem(image, meta, str(path))
        if problem:
            bad[str(path)] = problem
    return bad


def _record(name: str, clusters: ClusterResult) -> dict[str, Any]:
    sizes = np.bincount(clusters.labels.ravel())
    return {
        "case": name,
        "iterations": clusters.iterations,
        "seconds": round(clusters.seconds, 3),
        "cluster_sizes": {str(i): int(n) for i, n in enumerate(sizes) if i > 0 and n > 0},
        "outside_field_of_view": int(sizes[0]) if len(sizes) else 0,
        "hair_pixels_working_size": int(clusters.prepared.hair.sum()),
        "artefact_pixels_working_size": {k: int(v.sum()) for k, v in clusters.prepared.artefacts.items()},
    }


def _select(rule: str, clusters: ClusterResult, image: npt.NDArray[np.generic]) -> tuple[int, npt.NDArray[np.bool_]]:
    lightness = image_lightness(image) if cluster_protocol(rule).needs_images else None
    return select_mask(rule, clusters.labels, None, lightness)


def _overlay_case(
    name: str, image: npt.NDArray[np.generic], labels: npt.NDArray[np.int64], k: int, physical: bool
) -> OverlayCase:
    masks = np.stack([labels == c for c in range(1, k + 1)])
    shown = image.astype(np.float32) if image.shape[0] in (1, 3) else image[:1].astype(np.float32)
    return OverlayCase(name=name, image=shown, prediction=masks, physical=physical)


def _save_page(cases: list[OverlayCase], k: int, out_dir: Path, number: int) -> Path:
    labels = ["cluster 1 (darkest)", *[f"cluster {c}" for c in range(2, k + 1)]]
    (out_dir / "overlays").mkdir(exist_ok=True)
    title = "clusters (filled; darkest first); unfilled: outside the field of view"
    return save_overlays(cases, labels, out_dir / "overlays" / f"page_{number:02d}.png", title)
