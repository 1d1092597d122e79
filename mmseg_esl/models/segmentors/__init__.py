"""Segmentors: the ESL semi-supervised teacher/student wrapper."""
from .esl_segmentor import DEFAULT_SEMI_TRAIN_CFG, ESLSegmentor, valid_pixel_masks

__all__ = ['DEFAULT_SEMI_TRAIN_CFG', 'ESLSegmentor', 'valid_pixel_masks']
