"""The simulated rig: a scripted scene of people, Kinects and a 360 camera with ground truth, written
as an ordinary session. It sits on top of the library (it poses the people with the body model)
and nothing below it imports it; the library reads the truth it writes only through
:mod:`omnimocap.capture.truth`."""
