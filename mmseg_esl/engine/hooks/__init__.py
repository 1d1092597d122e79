"""Hooks: the EMA teacher (ESL §3.4) and the K-means initialisation of the part prototypes (ESL §3.3)."""
from .ema_teacher_hook import EMATeacherHook, check_teacher_student, ema_update_
from .prototype_init_hook import PrototypeInitHook

__all__ = ['EMATeacherHook', 'PrototypeInitHook', 'check_teacher_student', 'ema_update_']
