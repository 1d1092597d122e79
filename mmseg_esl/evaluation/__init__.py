"""Metrics: mmseg's IoU of the predicting model, and of the teacher and the student when both predicted."""
from .semi_iou_metric import SemiIoUMetric

__all__ = ['SemiIoUMetric']
