"""Content store: an OCI image layout holding blobs by digest, plus layerfs's own areas."""
