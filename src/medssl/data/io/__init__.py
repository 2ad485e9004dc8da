"""Reading and writing medical images with their geometry.

Every reader returns ``(array, ImageMeta)`` following the conventions of ``medssl.data.geometry``: a
channel-first array ``(C, *spatial)`` whose spatial axes are in the file's index order ``(i, j[, k])``, and a
meta whose world coordinates are RAS+ millimetres.

Formats:
- NIfTI (``.nii``, ``.nii.gz``) with nibabel. A 3D volume gives ``C=1``; a 4D ``(x, y, z, c)`` volume gives
  ``C=c``; a 2D NIfTI stays 2D. Scaled data (``scl_slope``) is returned as float32.
- A DICOM series folder, NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) with SimpleITK. Its
  ``(z, y, x)`` arrays are transposed to ``(x, y, z)``; its LPS world is converted to RAS (the first two world
  coordinates of the origin and rows 0 and 1 of the direction are negated) on read and back on write.
- 2D pictures (PNG, JPEG, BMP, TIFF, GIF, PPM/PGM) with Pillow. The spatial axes are (rows, columns) and the
  meta is ``ImageMeta.default(shape, physical=False)``. Grey (``L``) gives ``C=1``, 1-bit (``1``) gives 0/1,
  RGB gives ``C=3`` (alpha dropped), 16-bit PNG stays uint16 and palette images (``P``, e.g. GIF) give the
  palette INDEX, not a grey conversion. A multi-frame TIFF is read as a 3D stack ``(C, H, W, frames)``.

Floating-point data is returned as float32; integer data keeps the file's dtype.

Public API:
- ``read_image(path) -> (array, ImageMeta)``.
- ``read_label(path) -> (array, ImageMeta)``: a spatial int64 array (no channel axis). An RGB mask with equal
  channels is reduced to one channel; unequal channels or non-integer values raise ``MedsslError``.
- ``write_image(path, array, meta)``: writes ``(C, *spatial)`` or ``(*spatial)`` with ``meta``'s geometry; the
  format follows the suffix (``.nii``/``.nii.gz``, ``.nrrd``, ``.mha``, ``.png``, ``.tif``/``.tiff``,
  ``.bmp``, ``.jpg``/``.jpeg``). Integer arrays are written as integers, uint8 where they fit. PNG, BMP and
  JPEG take only uint8 (PNG also uint16) data. The write is atomic (a temporary file with the same suffix in
  the same folder, then ``os.replace``) and parent folders are created. A 2D image with several channels is
  refused for NIfTI (it would read back as a 3D volume); ``.mha``/``.nrrd`` keep it 2D.
- ``image_suffix(path)``: the recognised suffix in lower case (``".nii.gz"``, ``".png"``, ...) or ``""``
  (a DICOM folder, or an unsupported name).
- ``stem(path)``: the file name without that suffix (a folder: its name).
- ``is_image_path(path)``: whether the suffix is supported or the path is a DICOM series folder.
- ``is_dicom_dir(path)``: whether the path is a folder holding DICOM files.
- ``IMAGE_SUFFIXES``: the supported suffixes, longest first.

Every failure a user can cause (a missing, empty, corrupt, truncated or mis-named file, an unsupported suffix)
raises ``MedsslError`` with a message naming the file; library exceptions never escape. NaN values are not an
error here (``medssl.data.check`` reports them).

Modules: ``formats`` (suffixes, stems, DICOM folders), ``readers``, ``writers``.
"""

from medssl.data.io.formats import (
    IMAGE_SUFFIXES,
    WRITABLE_SUFFIXES,
    image_suffix,
    is_dicom_dir,
    is_image_path,
    stem,
)
from medssl.data.io.readers import read_image, read_label
from medssl.data.io.writers import write_image

__all__ = [
    "IMAGE_SUFFIXES",
    "WRITABLE_SUFFIXES",
    "image_suffix",
    "is_dicom_dir",
    "is_image_path",
    "read_image",
    "read_label",
    "stem",
    "write_image",
]
