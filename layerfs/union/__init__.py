"""The union filesystem: a merged tree of layers served over FUSE."""
