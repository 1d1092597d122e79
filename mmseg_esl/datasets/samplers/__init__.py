"""Samplers that draw labeled and unlabeled images into one batch."""
