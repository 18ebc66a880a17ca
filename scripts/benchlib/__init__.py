"""Benchmark support for `scripts/bench`: build a cached test image, mount it with
kernel overlayfs, fuse-overlayfs and layerfs, time workloads and report.

Modules, bottom to top: util (commands, logging, paths) -> mounts (tracking and
cleanup) -> ocilayout (overlay dir -> OCI layer tar) -> imagebuild (the cached
images) -> filesystems (the three contenders) -> workloads (what is timed) ->
report (table, targets, JSON) -> cli.
"""
