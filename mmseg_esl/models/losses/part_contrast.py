"""Pixel-to-part contrast (paper Sec. 3.3) and the prototype update of Sec. 3.4: one import for the pure functions.

Each class ``c`` is split into ``K`` object parts ("subclasses") with prototypes ``P`` of shape (C, K, L'). A
pixel is assigned to the part of its class whose prototype it is most similar to, the teacher's projected
features are averaged per part and pushed into a memory bank, and the student's anchors are contrasted against
one positive of their own part and ``N_s`` negatives of the other parts. Where each equation lives:

* Eq. 7, :func:`assign_parts`: :mod:`.part_assignment`.
* Eq. 8, :func:`masked_average_pool`, :func:`upsampled_masked_average_pool`: :mod:`.masked_pooling`.
* Eq. 9, :func:`sample_anchors`, :func:`gather_pixels`: :mod:`.anchor_sampling`.
* Eq. 10 and L_CTR, :func:`part_infonce`, :func:`part_infonce_from_bank`, :func:`class_mean_loss`:
  :mod:`.infonce`.
* Eq. 12, :func:`part_weighted_sums`, :func:`batch_part_means`, :func:`momentum_update_prototypes_`:
  :mod:`.prototype_update`.
* Argument checks, autocast and image chunks shared by them (and the precision policy under AMP):
  :mod:`.contrast_common`.

Paper defaults: ``zeta = 0.95``, 10 % anchors per class, ``N_s = 255`` negatives, ``sigma = 0.5``,
``theta = 0.99``, ``K = 5``.

Conventions: feature maps are ``(N, L, H, W)`` (channels in dim 1); class and part maps are long ``(N, H, W)``
at the *same* resolution as the features they index (nothing resizes, except where a function says so: the
caller resizes the label or the features first, as the paper does before MAP); part index -1 means "no part".
Flat pixel indices index ``class_map.reshape(-1)``, i.e. ``n * H * W + y * W + x``. Everything is
device-agnostic and vectorised, without Python loops over pixels, anchors, classes, parts or queue entries; the
only loops run over chunks of anchors or of images, so that no temporary exceeds ``CHUNK_ELEMENTS`` elements per
image chunk (the name re-exported here is a copy: to change the bound, set ``contrast_common.CHUNK_ELEMENTS``).
Checks of index values cost one host-device synchronisation each.
"""
from __future__ import annotations

from .anchor_sampling import QUOTA_ATOL, gather_pixels, sample_anchors
from .contrast_common import CHUNK_ELEMENTS, autocast_dtype, no_autocast
from .infonce import REDUCTIONS, class_mean_loss, part_infonce, part_infonce_from_bank
from .masked_pooling import masked_average_pool, upsampled_masked_average_pool
from .part_assignment import assign_parts
from .prototype_update import batch_part_means, momentum_update_prototypes_, part_weighted_sums

__all__ = [
    'CHUNK_ELEMENTS',
    'QUOTA_ATOL',
    'REDUCTIONS',
    'assign_parts',
    'autocast_dtype',
    'batch_part_means',
    'class_mean_loss',
    'gather_pixels',
    'masked_average_pool',
    'momentum_update_prototypes_',
    'no_autocast',
    'part_infonce',
    'part_infonce_from_bank',
    'part_weighted_sums',
    'sample_anchors',
    'upsampled_masked_average_pool',
]
