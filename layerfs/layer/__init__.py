"""Layers: unpack a layer tar into payload files plus a metadata index."""
