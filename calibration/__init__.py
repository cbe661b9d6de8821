"""Calibration: the solvers that place every sensor in one world frame (world frame, Kinect poses,
board and markerless 360 calibration) and map every clock onto the session clock (motion and flash
sync), and the ``calibrate`` / ``sync`` runs on a session with their configs."""
