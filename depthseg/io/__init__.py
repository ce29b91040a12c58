"""Storage and formats: local/S3 storage, the one raster reader, model bundles, chip stores.

* :class:`Storage` (:mod:`.storage`): local folders and ``s3://`` through s3fs and GDAL,
  configured once; retries, temporary folders, atomic writes;
* :func:`open_catalog` (:mod:`.catalog`, :mod:`.warp`, :mod:`.stac`): the scenes of a folder,
  file list, Zarr store or STAC catalog, read onto any grid (training and mapping both);
* :func:`load_bundle` / :func:`save_bundle` (:mod:`.bundle`): model + preprocessing contract;
* :class:`ChipStore` (:mod:`.chips`); :mod:`.lease` (one writer per output);
  :mod:`.weights` (weights from a URI); :mod:`.s3server` (the embedded S3 server).

Names are imported on first use (the package convention, :mod:`depthseg._lazy`).
"""

from typing import TYPE_CHECKING

from depthseg._lazy import lazy_exports

if TYPE_CHECKING:
    from depthseg.io.bundle import Bundle, Contract, load_bundle, save_bundle
    from depthseg.io.catalog import Catalog, Scene, open_catalog
    from depthseg.io.chips import ChipStore
    from depthseg.io.storage import Storage, open_zarr_store

_WHERE = {"Bundle": "bundle", "Contract": "bundle", "load_bundle": "bundle",
          "save_bundle": "bundle", "Catalog": "catalog", "Scene": "catalog",
          "open_catalog": "catalog", "ChipStore": "chips", "Storage": "storage",
          "open_zarr_store": "storage"}

__all__ = ["Bundle", "Catalog", "ChipStore", "Contract", "Scene", "Storage", "load_bundle",
           "open_catalog", "open_zarr_store", "save_bundle"]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
