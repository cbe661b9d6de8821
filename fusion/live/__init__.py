"""The live session as a library, without Qt: feeds (``feeds``), the snapshot (``state``), the
recent Kinect data (``history``), the hand preview that runs the stage of ``omnimocap process``
(``preview``) and the controller that ties them to recording and calibration (``controller``)."""
