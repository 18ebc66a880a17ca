"""Containers (a writable layer over an image) and data volumes that outlive them."""
