"""layerfs: container images as layered union filesystems in user space.

Packages follow the storage model bottom to top: ``store`` (blobs by digest in an
OCI layout) -> ``layer`` (unpack, metadata index) -> ``image`` (manifests,
references, import) -> ``union`` (merged tree, FUSE) -> ``cli``. A module imports
only from the packages below it, plus the leaf modules here, which import nothing
of layerfs's: ``errors``, ``progress``, ``identity``, ``timestamps`` and
``handoff`` (work a command leaves for after its answer, see the service).
"""
