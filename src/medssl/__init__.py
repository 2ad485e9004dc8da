"""medssl: label-efficient medical image segmentation in 2D and 3D."""

__version__ = "0.1.0"
