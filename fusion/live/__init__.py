"""The live session as a library, without Qt: feeds (``feeds``), the snapshot (``state``), the
recent Kinect data (``history``), the hand preview that runs the stage of ``omnimocap process``
(``preview``), the SMPL-X body fitted frame by frame with the hands on it (``body``), the Kinect
panes and world scene (``panes``), calibration in the background (``calibration``) and the
controller that ties them to the sources and the recorder (``controller``)."""
