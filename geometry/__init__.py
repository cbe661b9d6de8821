"""Geometry: camera models, rigid transforms and rotations, perspective views cut from the
panorama, and resampling of tracks onto other clocks. Depends on nothing but numpy and the data
layer."""
