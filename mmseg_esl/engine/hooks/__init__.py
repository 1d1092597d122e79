"""Hooks. The EMA-teacher and prototype-initialisation hooks land here."""
from .ema_teacher_hook import EMATeacherHook, check_teacher_student, ema_update_

__all__ = ['EMATeacherHook', 'check_teacher_student', 'ema_update_']
