"""omnimocap: whole-body capture from Azure Kinect body tracking and a 360 camera.

The design card's folders are subpackages of this namespace: ``omnimocap.capture``,
``omnimocap.calibration``, ``omnimocap.hands``, ``omnimocap.fusion``, ``omnimocap.apps`` and
``omnimocap.data``.
"""

__version__ = "0.1.0"
