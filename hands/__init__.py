"""Hands: the hand-estimator protocol and its backends (WiLoR, and the simulated observer that
reads a simulated session's truth), MANO model files, the synthetic MANO, and the model store."""
