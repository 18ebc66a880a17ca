"""Benchmark support for `scripts/bench`: build a cached test image, mount it with
kernel overlayfs, fuse-overlayfs and layerfs (browse and runtime mounts), time
workloads and report.

Modules, bottom to top: util (commands, logging, paths) -> mounts (tracking and
cleanup of mounts and other leftovers) -> ocilayout (overlay dir -> OCI layer
tar) -> imagebuild (the cached images) -> filesystems (the contenders; layerfs
twice: browse and runtime mounts) -> model (metrics, results) -> writable (a
fresh read-write layer per run: upper dir or container) -> writeloads (the
write workloads) -> workloads (the read-only ones, and the loop over all) ->
report (table, targets, JSON) -> cli.
"""
