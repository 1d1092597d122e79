"""Optimizer wrapper constructors."""
from .student_optim_constructor import StudentOptimWrapperConstructor

__all__ = ['StudentOptimWrapperConstructor']
