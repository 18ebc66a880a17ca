"""Namespaces, rootfs setup and process supervision for containers (built in a later issue)."""
