"""Export the teacher (or student) of an ESL checkpoint as a plain mmseg checkpoint.

The result loads with ``strict=True`` into the wrapped segmentor's plain config (e.g. the
``segmentor=...`` of the ESL config), so mmseg's tools, inference APIs and deployment work on it unchanged.
Training-only parts are left out: the projector head (``projector.*``, used by the contrastive loss only)
and the wrapper's own state (memory bank, prototypes).

Example:
    python tools/export_checkpoint.py work_dirs/esl/iter_80000.pth esl_teacher.pth --which teacher
"""
import argparse
import os.path as osp
from collections import OrderedDict
from typing import Dict

import torch
from mmengine.runner.checkpoint import _load_checkpoint

import mmseg_esl  # noqa: F401  (torch >= 2.6 checkpoint loading fix)

#: Submodule of student and teacher that only training needs (the projector P of the contrastive loss).
TRAINING_ONLY_PREFIX = 'projector.'


def export_state_dict(state_dict: Dict[str, torch.Tensor], which: str) -> 'OrderedDict[str, torch.Tensor]':
    """The ``which.``-prefixed entries of an ESL state dict, with the prefix removed, without ``projector.*``.

    Args:
        state_dict: ``state_dict`` of an ESL checkpoint (keys ``student.*``, ``teacher.*``, ...).
        which: ``'teacher'`` or ``'student'``.

    Returns:
        The plain segmentor's state dict.

    Raises:
        ValueError: If the state dict has no ``which.`` keys (not an ESL checkpoint).
    """
    prefix = f'{which}.'
    plain = OrderedDict((k[len(prefix):], v) for k, v in state_dict.items()
                        if k.startswith(prefix) and not k.startswith(prefix + TRAINING_ONLY_PREFIX))
    if not plain:
        raise ValueError(f'No "{prefix}*" weights in this checkpoint: it is not an ESLSegmentor checkpoint '
                         '(a plain mmseg checkpoint needs no export).')
    return plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint', help='ESL checkpoint (written by tools/train.py)')
    parser.add_argument('out', help='output path of the plain mmseg checkpoint')
    parser.add_argument('--which', choices=['teacher', 'student'], default='teacher',
                        help='network to export (default: teacher, the EMA model ESL evaluates)')
    args = parser.parse_args()
    checkpoint = _load_checkpoint(args.checkpoint, map_location='cpu')
    state_dict = checkpoint.get('state_dict', checkpoint)
    meta = dict(checkpoint.get('meta', {}))
    meta.update(exported_from=osp.abspath(args.checkpoint), exported_network=args.which)
    plain = export_state_dict(state_dict, args.which)
    torch.save(dict(meta=meta, state_dict=plain), args.out)
    print(f'wrote the {args.which} ({len(plain)} tensors) of {args.checkpoint} to {args.out}')


if __name__ == '__main__':
    main()
