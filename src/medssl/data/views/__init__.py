"""Random views for self-supervised pretraining that record what was done to them.

One ``ViewGenerator`` serves SimCLR, BYOL, PGL, PCRL and S3-Net, in 2D and 3D: a batch ``(B, C, *spatial)`` goes
in, views ``(B, C, *out_size)`` come out together with one ``ViewRecord`` per sample and view. The records are what
prior-guided methods need: PGL aligns the feature maps of two views on the overlap of their crop boxes
(Xie et al., MICCAI 2021, https://arxiv.org/abs/2109.13243), PCRL conditions its decoder on the flips and
rotations that were applied (Zhou et al., ICCV 2021, https://arxiv.org/abs/2106.14038).

Making a view, in this order:
    1. crop a box of the input (the box may extend past the input: outside is padded, ``padding_mode``);
    2. resize the crop to the output size (linear interpolation);
    3. mirror each axis with probability ``flip_p``;
    4. turn by ``k`` quarter turns in ``rot90_plane`` (``torch.rot90`` sense);
    5. intensity ops on the view: per-channel gain and saturation (``rgb=True`` only), Gaussian noise, Gaussian blur,
       multiplicative brightness/contrast, gamma.
Steps 1-4 are one ``affine_grid`` + ``grid_sample`` call per batch.

Coordinate conventions (every record and function here):
    - Points are voxel coordinates per spatial axis, in array order, with voxel centres at integer indices: voxel
      ``i`` covers ``[i - 0.5, i + 0.5)``. ``view_to_input`` / ``input_to_view`` map points.
    - Boxes are ``[lo, hi)`` in voxel-edge coordinates, the convention of array slicing: the box ``[2, 5)`` holds
      voxels 2, 3 and 4, the whole input is ``[0, shape)``, and box coordinates are point coordinates + 0.5. Crop
      boxes, ``overlap_box`` and ``box_in_view`` all use it, which is also what ``torchvision.ops.roi_align`` expects
      with ``aligned=True`` (divide by the feature stride to get feature-map boxes).
    - Sampling follows ``align_corners=False``: the view's extent ``[0, out_size)`` maps linearly onto the crop box.

Modules: ``generator`` (``ViewGenerator``), ``record`` (``ViewRecord``, overlaps), ``coordinates`` (the maps),
``boxes`` (crop boxes), ``options`` (settings checks).
"""

from medssl.data.views.generator import ViewGenerator
from medssl.data.views.options import IntensityOp
from medssl.data.views.record import ViewRecord, overlap_box, overlap_fraction

__all__ = ["IntensityOp", "ViewGenerator", "ViewRecord", "overlap_box", "overlap_fraction"]
