"""Test support: build OCI images, compute the expected merged tree, read real mounts.

- `oci`: layer tars from declarative specs, OCI layouts and archives, docker archives.
- `oracle`: an independent reference for what a merged image tree must look like.
- `snapshot`: the same view read from a real directory (a mount), and a readable diff.
- `kernel_overlay`: the same layers as kernel overlayfs / fuse-overlayfs mounts (root only).
- `cases`: synthetic layer stacks covering the OCI layer rules.
- `fsops`: filesystem operations (and a hypothesis strategy) replayed on a container
  mount and on kernel overlayfs, answering errno names instead of raising.
"""
