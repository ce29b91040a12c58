"""Map a region with a DepthSeg model bundle: ``python jobs/map_region.py --help``.

The command lives in the package (:mod:`depthseg.mapping.cli`, also ``python -m
depthseg.mapping.cli``) so that an installed depthseg maps without this checkout.
"""

from depthseg.mapping.cli import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
