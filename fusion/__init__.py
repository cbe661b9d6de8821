"""Fusion: hand association and lifting into the world frame, SMPL-X body fitting, hand
integration, temporal filtering and exports."""
