"""Hooks: the EMA teacher (ESL §3.4), the K-means initialisation of the part prototypes (ESL §3.3), the RNG
states that make a resume exact, and the pseudo-label monitor (Fig. 3 images to the visualisation backends)."""
from .ema_teacher_hook import EMATeacherHook, check_teacher_student, ema_update_
from .prototype_init_hook import PrototypeInitHook
from .pseudo_label_vis_hook import PseudoLabelVisHook
from .rng_state_hook import RNGStateHook

__all__ = ['EMATeacherHook', 'PrototypeInitHook', 'PseudoLabelVisHook', 'RNGStateHook', 'check_teacher_student',
           'ema_update_']
