"""Inspection: what each layer, image and container added, changed and deleted."""
