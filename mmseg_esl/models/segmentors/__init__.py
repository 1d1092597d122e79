"""Segmentors: the ESL semi-supervised teacher/student wrapper."""
from .batch_layout import valid_pixel_masks
from .esl_segmentor import ESLSegmentor
from .semi_train_config import DEFAULT_SEMI_TRAIN_CFG

__all__ = ['DEFAULT_SEMI_TRAIN_CFG', 'ESLSegmentor', 'valid_pixel_masks']
