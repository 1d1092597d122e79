"""Samplers that draw labeled and unlabeled images into one batch."""
from .semi_sampler import SemiSupervisedSampler

__all__ = ['SemiSupervisedSampler']
