"""Decode heads: the projector P of ESL §3.1 and the tap that feeds it the decoder features."""
from .projector_head import DecodeFeatureTap, ProjectorHead, tap_decode_features

__all__ = ['DecodeFeatureTap', 'ProjectorHead', 'tap_decode_features']
