"""The session's ``rig.json`` as ``calibrate`` and ``sync`` read and replace it.

Both verbs start from the rig already there (the Kinects' time maps, the poses they keep) and
write the whole rig back atomically with the configuration they ran with. A simulated session's
ground truth lives in ``truth/rig.json`` and is never written; the session's own ``rig.json``
(which starts as a copy of the truth) is replaced by the estimate, and the verbs say so.
"""

from __future__ import annotations

import sys

from omnimocap.capture.rig import Rig
from omnimocap.capture.session import MANIFEST, Session
from omnimocap.errors import InputError


def load_rig(session: Session) -> Rig:
    """The session's rig; :class:`InputError` without one."""
    if not session.rig_path.is_file():
        raise InputError("the session has no rig.json with the Kinects' poses and time maps", path=session.rig_path,
                         fix="create it from the reference Kinect's world frame first")
    return Rig.load(session.rig_path)


def reference_serial(session: Session, rig: Rig) -> str:
    """The reference (first) Kinect's serial; :class:`InputError` without a Kinect or without its
    pose in ``rig``."""
    kinects = session.kinects()
    if not kinects:
        raise InputError("the session has no Kinect", path=session.root / MANIFEST)
    rig.pose(kinects[0].name)
    return kinects[0].serial


def write_rig(session: Session, rig: Rig, previous: Rig) -> None:
    """Replace the session's rig.json with ``rig``; says on stderr when ``previous`` was the copy of
    the simulated truth."""
    rig.save(session.rig_path)
    if previous.is_truth:
        print(f"{session.rig_path}: replaced the copy of the simulated truth (the truth stays in truth/rig.json)",
              file=sys.stderr)
