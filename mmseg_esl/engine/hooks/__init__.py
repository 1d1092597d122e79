"""Hooks: the EMA teacher (ESL §3.4), the K-means initialisation of the part prototypes (ESL §3.3) and the RNG
states that make a resume exact."""
from .ema_teacher_hook import EMATeacherHook, check_teacher_student, ema_update_
from .prototype_init_hook import PrototypeInitHook
from .rng_state_hook import RNGStateHook

__all__ = ['EMATeacherHook', 'PrototypeInitHook', 'RNGStateHook', 'check_teacher_student', 'ema_update_']
