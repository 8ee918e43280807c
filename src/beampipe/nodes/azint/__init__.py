"""Azimuthal integration of 2-D diffraction and scattering frames with pyFAI (extra ``azint``):
``azint.integrate1d`` and ``azint.integrate2d`` (:mod:`.integrate`), their geometry from a PONI
file or from params (:mod:`.geometry`), the I0 monitor of each frame (:mod:`.monitor`)."""
