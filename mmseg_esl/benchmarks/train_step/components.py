"""ESL's components timed inside real (e) iterations, by wrapping the functions and methods of its path."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .device import synchronize

if TYPE_CHECKING:
    from .measure import Run

#: Component names of ``--components``, in table order.
COMPONENTS: Tuple[str, ...] = ('dsl', 'part_grouping', 'map', 'bank_update', 'prototype_update',
                               'anchor_sampling', 'infonce_forward', 'infonce_backward', 'contrast_other')
COMPONENT_LABELS: Dict[str, str] = {
    'dsl': 'DSL (pseudo_label + soft-CE forward, Eq. 3-6)',
    'part_grouping': 'part grouping (assign, Eq. 7)',
    'map': 'MAP: z^t (Eq. 8) + normalised E^t (Eq. 12)',
    'bank_update': 'bank update (enqueue)',
    'prototype_update': 'prototype update (batch means, momentum, Eq. 12)',
    'anchor_sampling': 'anchor sampling (Eq. 9, pos./neg. draws)',
    'infonce_forward': 'InfoNCE forward (Eq. 10)',
    'infonce_backward': 'InfoNCE backward',
    'contrast_other': 'rest of the contrast steps (maps, CutMix, masks, student projector)',
}


@contextmanager
def instrumented(run: Run, records: Dict[str, List[float]], captured: Dict) -> Iterator[None]:
    """Wraps the functions of the real (e) path with synchronised timers; restores them on exit.

    Instance attributes shadow the bound methods (``DSLLoss.pseudo_label``/``forward``,
    ``PixelPartContrastLoss.assign``/``forward``/``update``, the bank's ``enqueue`` and samplers,
    ``ESLSegmentor``'s three contrastive steps); the pure functions are patched in the namespace of
    ``pixel_part_contrast_loss``, which is where ``forward`` and ``update`` look them up.
    """
    from mmseg_esl.models.losses import pixel_part_contrast_loss as ppcl
    model, device = run.model, run.device
    loss_fn = model.contrast_loss

    def timer(name: str, fn: Callable, capture: bool = False) -> Callable:
        def wrapper(*a, **k):
            synchronize(device)
            start = time.perf_counter()
            out = fn(*a, **k)
            synchronize(device)
            records.setdefault(name, []).append(time.perf_counter() - start)
            if capture:
                captured[name] = (a, k)
            return out
        return wrapper

    instance_patches = [(model.unsup_loss, 'pseudo_label'), (model.unsup_loss, 'forward'),
                        (model, 'contrast_targets'), (model, 'loss_contrast'), (model, 'update_bank_and_prototypes'),
                        (loss_fn, 'assign'), (loss_fn, 'forward'), (loss_fn, 'update'), (loss_fn.bank, 'enqueue'),
                        (loss_fn.bank, 'sample_positive_idx'), (loss_fn.bank, 'sample_negative_idx')]
    names = ['pseudo_label', 'unsup_forward', 'contrast_targets', 'loss_contrast', 'update_bank', 'assign',
             'contrast_forward', 'update', 'enqueue',
             'sample_positive_idx', 'sample_negative_idx']
    module_patches = ['masked_average_pool', 'upsampled_masked_average_pool', 'sample_anchors', 'gather_pixels',
                      'part_infonce_from_bank']
    saved_modules = {name: getattr(ppcl, name) for name in module_patches}
    try:
        for (obj, attr), name in zip(instance_patches, names):
            setattr(obj, attr, timer(name, getattr(obj, attr)))
        for name in module_patches:
            setattr(ppcl, name, timer(name, saved_modules[name], capture=name == 'part_infonce_from_bank'))
        yield
    finally:
        for obj, attr in instance_patches:
            obj.__dict__.pop(attr, None)
        for name, fn in saved_modules.items():
            setattr(ppcl, name, fn)


def infonce_backward_seconds(run: Run, captured: Dict) -> Optional[float]:
    """Backward time of Eq. 10 on the tensors of the last real call (forward again, then timed backward)."""
    from mmseg_esl.models.losses.part_contrast import part_infonce_from_bank
    if 'part_infonce_from_bank' not in captured:
        return None
    args, kwargs = captured['part_infonce_from_bank']
    anchors = args[0].detach().clone().requires_grad_(True)
    with run.optim_wrapper.optim_context(run.model):
        out = part_infonce_from_bank(anchors, *args[1:], **kwargs)
        loss = (out[0] if isinstance(out, tuple) else out).sum()
    synchronize(run.device)
    start = time.perf_counter()
    loss.backward()
    synchronize(run.device)
    return time.perf_counter() - start


def component_pass(run: Run, iters: int) -> Dict[str, float]:
    """Median milliseconds of each component over ``iters`` instrumented (e) iterations."""
    per_step: List[Dict[str, float]] = []
    for _ in range(iters):
        records: Dict[str, List[float]] = {}
        captured: Dict = {}
        with instrumented(run, records, captured):
            synchronize(run.device)
            start = time.perf_counter()
            run.step()
            synchronize(run.device)
            total = time.perf_counter() - start
        t = {k: sum(v) for k, v in records.items()}
        get = t.get
        comp = dict(
            dsl=get('pseudo_label', 0) + get('unsup_forward', 0),
            part_grouping=get('assign', 0),
            map=get('masked_average_pool', 0) + get('upsampled_masked_average_pool', 0),
            bank_update=get('enqueue', 0),
            anchor_sampling=(get('sample_anchors', 0) + get('sample_positive_idx', 0)
                             + get('sample_negative_idx', 0) + get('gather_pixels', 0)),
            infonce_forward=get('part_infonce_from_bank', 0),
        )
        comp['prototype_update'] = get('update', 0) - comp['map'] - comp['bank_update']
        contrast_steps = get('contrast_targets', 0) + get('loss_contrast', 0) + get('update_bank', 0)
        comp['contrast_other'] = (contrast_steps - comp['part_grouping'] - get('update', 0)
                                  - comp['anchor_sampling'] - comp['infonce_forward'])
        comp['infonce_backward'] = infonce_backward_seconds(run, captured) or 0.0
        comp['instrumented_step'] = total
        per_step.append(comp)
    return {name: 1e3 * float(np.median([c[name] for c in per_step])) for name in per_step[0]}
