"""Segmentors. The ESL semi-supervised wrapper (``ESLSegmentor``) lands here (learning-core issue)."""
