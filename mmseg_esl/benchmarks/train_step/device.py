"""Device housekeeping around timed code: wait for queued GPU work, free cached memory."""
from __future__ import annotations

import gc

import torch


def synchronize(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def release(device: str) -> None:
    gc.collect()
    if device == 'cuda':
        torch.cuda.empty_cache()

