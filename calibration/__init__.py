"""Calibration: camera models, rigid transforms, the rig (every sensor in one world frame) and
time synchronization onto the session clock."""
