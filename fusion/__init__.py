"""Fusion: the per-frame hand stage (association, lifting, depth cue), the offline pipeline and its
chunks and batches, SMPL-X body fitting, hand integration, temporal filtering, evaluation, exports
and the live session controller."""
