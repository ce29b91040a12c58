"""DepthSeg: depth-prompted land-cover segmentation, trained and mapped at province scale.

Kept deliberately light: importing :mod:`depthseg` (or :mod:`depthseg.model`) pulls in
no Ray, rasterio, zarr, s3fs or xarray, so the model runs on a bare GPU box.
"""

__version__ = "0.1.0"
