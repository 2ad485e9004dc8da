"""Image geometry that travels with every array read from disk.

Conventions (one for every format):
- arrays are channel-first, ``(C, *spatial)``; spatial axes are in the file's index order ``(i, j[, k])``
  (nibabel's order; SimpleITK's ``(z, y, x)`` arrays are transposed to ``(x, y, z)`` when read);
- world coordinates are RAS+ millimetres (NIfTI's convention; DICOM/NRRD/MHA's LPS is converted on read and
  back on write);
- ``direction`` holds the unit direction cosine of each array axis as its columns, so that
  ``world = origin + direction @ (spacing * index)``.
2D images without physical geometry get spacing 1, origin 0 and the identity direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

GEOMETRY_RTOL = 1e-3


@dataclass(frozen=True)
class ImageMeta:
    """Geometry and provenance of an image.

    Args:
        spacing: voxel size per spatial axis, array order, millimetres (or pixels when unknown).
        origin: world position (RAS+ mm) of the centre of the first voxel.
        direction: ``ndim x ndim`` matrix, column ``a`` is the unit direction of array axis ``a``.
        shape: spatial shape of the array as read (before any resampling or cropping).
        source: path the image was read from ("" when built in memory).
        format: short name of the file format ("nifti", "dicom", "nrrd", "mha", "png", "jpeg", ...).
        physical: whether spacing is known from the file (False for plain 2D pictures).
    """

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[tuple[float, ...], ...]
    shape: tuple[int, ...]
    source: str = ""
    format: str = ""
    physical: bool = True
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions."""
        return len(self.shape)

    @classmethod
    def default(cls, shape: tuple[int, ...], source: str = "", fmt: str = "", physical: bool = False) -> ImageMeta:
        """Unit spacing, zero origin, identity direction for an array of spatial ``shape``."""
        n = len(shape)
        eye = tuple(tuple(1.0 if r == c else 0.0 for c in range(n)) for r in range(n))
        return cls((1.0,) * n, (0.0,) * n, eye, tuple(int(s) for s in shape), source, fmt, physical)

    def affine(self) -> np.ndarray:
        """The ``(ndim+1, ndim+1)`` index-to-world matrix."""
        n = self.ndim
        a = np.eye(n + 1)
        a[:n, :n] = np.asarray(self.direction, dtype=float) * np.asarray(self.spacing, dtype=float)[None, :]
        a[:n, n] = self.origin
        return a

    @classmethod
    def from_affine(cls, affine: np.ndarray, shape: tuple[int, ...], source: str = "", fmt: str = "") -> ImageMeta:
        """Split an index-to-world matrix into spacing, origin and direction (no shear assumed)."""
        n = len(shape)
        lin = np.asarray(affine, dtype=float)[:n, :n]
        spacing = np.linalg.norm(lin, axis=0)
        spacing[spacing == 0] = 1.0
        direction = lin / spacing[None, :]
        origin = np.asarray(affine, dtype=float)[:n, n]
        return cls(
            tuple(float(s) for s in spacing),
            tuple(float(o) for o in origin),
            tuple(tuple(float(v) for v in row) for row in direction),
            tuple(int(s) for s in shape),
            source,
            fmt,
            True,
        )

    def with_shape(self, shape: tuple[int, ...], spacing: tuple[float, ...] | None = None) -> ImageMeta:
        """Same origin and direction for a resampled grid covering the same extent."""
        return replace(
            self, shape=tuple(int(s) for s in shape), spacing=spacing if spacing is not None else self.spacing
        )


def geometry_difference(a: ImageMeta, b: ImageMeta, rtol: float = GEOMETRY_RTOL) -> str:
    """Which of spacing, origin and direction differ beyond ``rtol`` ("" when they agree or one is not physical).

    Args:
        a: first geometry.
        b: second geometry.
        rtol: relative tolerance (origins also accept ``rtol`` times the voxel size, directions ``rtol``).

    Returns:
        A description of the differences, or "".
    """
    if not (a.physical and b.physical) or a.ndim != b.ndim:
        return ""
    diffs = []
    if not np.allclose(a.spacing, b.spacing, rtol=rtol, atol=0.0):
        diffs.append(f"spacing {_vec(a.spacing)} vs {_vec(b.spacing)}")
    if not np.allclose(a.origin, b.origin, rtol=rtol, atol=rtol * max(*a.spacing, 1e-6)):
        diffs.append(f"origin {_vec(a.origin)} vs {_vec(b.origin)}")
    if not np.allclose(a.direction, b.direction, rtol=0.0, atol=rtol):
        diffs.append("direction differs")
    return "; ".join(diffs)


def _vec(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
