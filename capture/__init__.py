"""Capture: the session format, Kinect recordings and devices, body tracking, 360 sources, the
simulated rig and the recorder."""
