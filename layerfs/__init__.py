"""layerfs: container images as layered union filesystems in user space.

Packages follow the storage model bottom to top: ``store`` (blobs by digest in an
OCI layout) -> ``layer`` (unpack, metadata index) -> ``image`` (manifests,
references, import) -> ``union`` (merged tree, FUSE) -> ``cli``. A module imports
only from the packages below it, plus the two leaf modules here (``errors``,
``progress``).
"""
