"""Hands: wrist-centred view planning and reprojection, the hand-estimator protocol and its
backends (the simulated observer and WiLoR), MANO model files."""
