"""Capture: the session format, the rig file, Kinect recordings and devices, body tracking, 360
sources and the recorder."""
