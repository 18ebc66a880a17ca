"""Images: manifests and configs, `name:tag` references, import from other formats."""
