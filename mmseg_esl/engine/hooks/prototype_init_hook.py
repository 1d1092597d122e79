"""Initial subclass prototypes P ∈ R^{C×K×L'} by K-means on the labeled set's encoder features (ESL §3.3).

The paper: "before the formal training, we first collect the features {E^t(x_i^l)} of dimension L' for the
entire labeled dataset D^l, where E^t is initialized with the parameter pre-trained on ImageNet ... split
pixel-wisely into C classes ... apply K-means to each E_c to obtain K subclasses", whose means form P.
:class:`PrototypeInitHook` does this once, in ``before_train``, and copies P into the contrastive loss's
``prototypes`` buffer. From then on P follows Eq. 12 inside the loss, and, being a buffer of the model, it is
saved in checkpoints and restored on resume (the hook then does nothing).

When (``init_at``): the paper clusters "before the formal training", which for it is also where the contrastive
term starts. With a supervised-only phase (``EMATeacherHook.sup_only_iters``, borrowed from U2PL) the two differ:
``'train'`` clusters the ImageNet-initialised encoder in ``before_train``; ``'semi'`` clusters the teacher the
contrastive term starts with, at the first semi-supervised iteration (the same as ``'train'`` without such a phase).

What is clustered: a bounded uniform sample of at most ``max_pixels_per_class`` pixels per class
(:class:`~mmseg_esl.models.utils.prototypes.ClassPixelReservoir`; all pixels of a labeled set do not fit in
memory at L' = 2048), L2-normalised, by scikit-learn's KMeans (:func:`kmeans_prototypes`).
"""
import copy
import logging
import time
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine import dist
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.utils import ProgressBar
from mmseg.registry import HOOKS
from torch import Tensor, nn
from torch.utils.data import DataLoader

from mmseg_esl.checks import positive_int
from mmseg_esl.models.utils.prototypes import ClassPixelReservoir, kmeans_prototypes

STORAGE_DTYPES = ('float16', 'float32')
INIT_AT = ('train', 'semi')
# What the hook reads from ``model.contrast_loss`` (see PrototypeInitHook's docstring).
_CONTRAST_ATTRIBUTES = ('num_classes', 'num_parts', 'feat_channels', 'in_index', 'ignore_index', 'prototypes',
                        'prototypes_ready', 'set_prototypes_')
_DATALOADER_EXAMPLE = ("dict(batch_size=8, num_workers=2, sampler=dict(type='DefaultSampler', shuffle=False), "
                       "dataset=dict(<the labeled set>, pipeline=[dict(type='LoadImageFromFile'), "
                       "dict(type='LoadAnnotations'), dict(type='PackSegInputs')]))")


def _positive_int(name: str, value) -> int:
    return positive_int(name, value, owner='PrototypeInitHook')


@HOOKS.register_module()
class PrototypeInitHook(Hook):
    """Initialises the part prototypes P (C, K, L') by per-class K-means on E^t features of the labeled set.

    Once, in ``before_train`` with ``init_at='train'`` (priority ``'BELOW_NORMAL'``: after ``EMATeacherHook`` has
    set teacher := student, so E^t is the ImageNet-initialised encoder, as in the paper), or in ``before_train_iter``
    of the first iteration with ``model.semi_supervised`` True with ``init_at='semi'`` (after ``EMATeacherHook`` has
    set that switch; E^t is then the teacher the contrastive term starts with):

    1. every labeled image of ``dataloader`` (under DDP a ``DefaultSampler`` shard, ``round_up=False`` so no
       image counts twice) is preprocessed by ``model.data_preprocessor`` (images of one size at a time: the
       preprocessor cannot stack VOC's sizes), encoded by ``model.teacher_encoder_features`` (N, L', h, w), and
       its labels are nearest-resized to (h, w) (E^t is never upsampled);
    2. each labeled pixel is offered to a ``ClassPixelReservoir`` (a uniform sample of at most
       ``max_pixels_per_class`` per class, seed ``seed + rank``), merged over ranks;
    3. rank 0 runs ``kmeans_prototypes`` (K-means on the L2-normalised sample of each class), P is broadcast
       and stored with ``model.contrast_loss.set_prototypes_(P)``;
    4. what was seen and clustered per class is logged; absent classes and classes with fewer than K pixels are
       warnings (see :attr:`report`), never errors.

    On resume P comes with the checkpoint and the hook does nothing; a checkpoint without initialised P is
    initialised from the current teacher, with a warning. ``model.contrast_loss is None`` (no contrastive term):
    the hook logs that and returns. The model needs ``contrast_loss`` (``num_classes``, ``num_parts``,
    ``feat_channels``, ``in_index``, ``ignore_index``, ``prototypes``, ``prototypes_ready``, ``set_prototypes_``),
    ``teacher``, ``teacher_encoder_features`` and ``data_preprocessor``, as ``ESLSegmentor`` has.

    Args:
        dataloader: Dataloader config (or ``DataLoader``) over the *labeled* set with a deterministic pipeline
            (no random crop or flip). Required; an ``InfiniteSampler`` is refused.
        max_pixels_per_class: Sample size M per class; memory per rank C × M × (L' × element size + 8) bytes.
        storage_dtype: ``'float16'`` (half the memory) or ``'float32'``; K-means always runs in float32.
        seed: Reservoir seed (``seed + rank``), K-means ``random_state`` and the dataloader's seed.
        n_init: K-means++ restarts per class (the lowest inertia is kept).
        max_iter: Maximum Lloyd iterations per K-means run.
        init_at: ``'train'`` (before training) or ``'semi'`` (at the start of the semi-supervised phase); see the
            module docstring.

    Raises:
        ValueError: On a missing ``dataloader`` or an out-of-range argument, naming it.
    """

    priority = 'BELOW_NORMAL'

    def __init__(self, *, dataloader: Optional[Union[Dict, DataLoader]] = None, max_pixels_per_class: int = 5000,
                 storage_dtype: str = 'float16', seed: int = 0, n_init: int = 10, max_iter: int = 300,
                 init_at: str = 'train') -> None:
        if dataloader is None:
            raise ValueError('PrototypeInitHook needs the labeled set to cluster: set custom_hooks[...].dataloader '
                             f'(the entry with type=\'PrototypeInitHook\') to a dataloader config, e.g. '
                             f'{_DATALOADER_EXAMPLE}.')
        if not isinstance(dataloader, (dict, DataLoader)):
            raise ValueError('PrototypeInitHook: custom_hooks[...].dataloader must be a dataloader config dict (or '
                             f'a DataLoader), got {type(dataloader).__name__}; e.g. {_DATALOADER_EXAMPLE}.')
        if isinstance(dataloader, dict):
            dataloader = copy.deepcopy(dataloader)
            if 'dataset' not in dataloader:
                raise ValueError('PrototypeInitHook: custom_hooks[...].dataloader has no `dataset`; e.g. '
                                 f'{_DATALOADER_EXAMPLE}.')
            sampler = dataloader.get('sampler')
            if isinstance(sampler, dict):
                if 'Infinite' in str(sampler.get('type', '')):
                    raise ValueError(f"PrototypeInitHook: custom_hooks[...].dataloader.sampler.type="
                                     f"{sampler['type']!r} never ends; use dict(type='DefaultSampler', "
                                     'shuffle=False).')
                if sampler.get('type') in ('DefaultSampler', 'mmengine.DefaultSampler'):
                    sampler.setdefault('round_up', False)  # no image twice (see the class docstring)
        if storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f'PrototypeInitHook: storage_dtype must be one of {STORAGE_DTYPES}, got '
                             f'storage_dtype={storage_dtype!r}.')
        if init_at not in INIT_AT:
            raise ValueError(f'PrototypeInitHook: init_at must be one of {INIT_AT}, got init_at={init_at!r}.')
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f'PrototypeInitHook: seed must be an int >= 0, got seed={seed!r}.')
        self.dataloader = dataloader
        self.max_pixels_per_class = _positive_int('max_pixels_per_class', max_pixels_per_class)
        self.storage_dtype = storage_dtype
        self.seed = seed
        self.n_init = _positive_int('n_init', n_init)
        self.max_iter = _positive_int('max_iter', max_iter)
        self.init_at = init_at
        #: The report of ``kmeans_prototypes`` (see there) of the last initialisation, None before.
        self.report: Optional[Dict] = None

    @staticmethod
    def _unwrap(runner) -> nn.Module:
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    @staticmethod
    def _contrast_loss(model: nn.Module) -> Optional[nn.Module]:
        """``model.contrast_loss`` (None when disabled), checked for the attributes the hook reads."""
        if not hasattr(model, 'contrast_loss'):
            raise TypeError(f'PrototypeInitHook needs a model with a `contrast_loss` attribute (None when the '
                            f'contrastive loss is disabled); {type(model).__name__} has none. Remove the hook from '
                            'custom_hooks for models without a pixel-to-part contrastive loss.')
        contrast = model.contrast_loss
        if contrast is None:
            return None
        missing = [name for name in _CONTRAST_ATTRIBUTES if not hasattr(contrast, name)]
        if missing:
            raise TypeError(f'PrototypeInitHook: model.contrast_loss ({type(contrast).__name__}) lacks '
                            f'{", ".join(missing)}.')
        return contrast

    def before_train(self, runner) -> None:
        """With ``init_at='train'``: initialises the prototypes, unless contrast is disabled or P was resumed."""
        model = self._unwrap(runner)
        contrast = self._contrast_loss(model)
        if contrast is None:
            print_log('PrototypeInitHook: model.contrast_loss is None (contrastive loss disabled): no prototypes to '
                      'initialise.', logger='current')
            return
        if self.init_at == 'train':
            self._initialise_unless_resumed(runner, contrast)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """With ``init_at='semi'``: initialises the prototypes at the first semi-supervised iteration."""
        if self.init_at != 'semi':
            return
        model = self._unwrap(runner)
        contrast = model.contrast_loss
        if contrast is None or bool(contrast.prototypes_ready) or not getattr(model, 'semi_supervised', True):
            return
        self._initialise(runner, contrast)

    def _initialise_unless_resumed(self, runner, contrast: nn.Module) -> None:
        if runner.iter > 0:
            if bool(contrast.prototypes_ready):
                print_log(f'PrototypeInitHook: resumed at iter {runner.iter}; prototypes come from the checkpoint.',
                          logger='current')
                return
            print_log(f'PrototypeInitHook: resumed at iter {runner.iter} but the checkpoint\'s prototypes are not '
                      'initialised (prototypes_ready is False); initialising them from the current teacher, which is '
                      'no longer the ImageNet-initialised encoder.', logger='current', level=logging.WARNING)
        self._initialise(runner, contrast)

    def _initialise(self, runner, contrast: nn.Module) -> None:
        """Steps 1-4 of the class docstring."""
        start = time.perf_counter()
        reservoir, num_images = self.collect_pixels(runner)
        num_classes, num_parts, dim = reservoir.num_classes, int(contrast.num_parts), reservoir.dim
        if dist.get_rank() == 0:
            prototypes, report = kmeans_prototypes(reservoir, num_parts, seed=self.seed, n_init=self.n_init,
                                                   max_iter=self.max_iter)
        else:
            prototypes, report = torch.zeros(num_classes, num_parts, dim), None
        prototypes = self._broadcast(prototypes)
        holder = [report]
        dist.broadcast_object_list(holder, src=0)
        report = holder[0]
        contrast.set_prototypes_(prototypes)
        self.report = report
        self._log(report, num_images, reservoir, time.perf_counter() - start, runner.iter)

    @staticmethod
    def _broadcast(prototypes: Tensor) -> Tensor:
        """Rank 0's ``prototypes`` on every rank, through the backend's device (CUDA for NCCL)."""
        if dist.get_world_size() == 1:
            return prototypes
        buffer = prototypes.to(dist.get_comm_device())
        dist.broadcast(buffer, src=0)
        return buffer.cpu()

    @torch.no_grad()
    def collect_pixels(self, runner) -> Tuple[ClassPixelReservoir, int]:
        """Steps 1-2 of the class docstring: the merged per-class sample of E^t pixels of the labeled set.

        Args:
            runner: The runner; ``runner.model`` must follow the interface of the class docstring, with a
                non-None ``contrast_loss``.

        Returns:
            ``(reservoir, num_images)``: the reservoir holding the same sample on every rank (features of shape
            (m_c, L') per class, see :meth:`ClassPixelReservoir.samples`), and the number of images read by all
            ranks together.

        Raises:
            ValueError: If E^t has not ``feat_channels`` channels, or ``in_index`` does not name an output of
                ``teacher.extract_feat``.
        """
        model = self._unwrap(runner)
        contrast = self._contrast_loss(model)
        if contrast is None:
            raise ValueError('PrototypeInitHook.collect_pixels: model.contrast_loss is None (contrast disabled).')
        teacher = getattr(model, 'teacher', None)
        if not isinstance(teacher, nn.Module) or not hasattr(teacher, 'extract_feat'):
            raise TypeError(f'PrototypeInitHook needs `model.teacher`, a segmentor with extract_feat(); '
                            f'{type(model).__name__} has teacher={type(teacher).__name__}.')
        preprocessor = model.data_preprocessor
        teacher.eval()
        dim, in_index = int(contrast.feat_channels), int(contrast.in_index)
        rank = dist.get_rank()
        reservoir = ClassPixelReservoir(num_classes=int(contrast.num_classes),
                                        max_pixels_per_class=self.max_pixels_per_class, dim=dim, seed=self.seed + rank,
                                        dtype=getattr(torch, self.storage_dtype), device='cpu',
                                        ignore_index=int(contrast.ignore_index))
        dataloader = Runner.build_dataloader(self.dataloader, seed=self.seed, diff_rank_seed=False)
        print_log(f'PrototypeInitHook: collecting E^t (teacher.extract_feat(x)[{in_index}]) pixels of '
                  f'{len(dataloader.dataset)} labeled images over {dist.get_world_size()} rank(s) into {reservoir}.',
                  logger='current')
        progress = ProgressBar(len(dataloader)) if rank == 0 else None
        num_images = 0
        for data_batch in dataloader:
            for group in self._split_by_size(data_batch):
                data = preprocessor(group, True)
                feats = model.teacher_encoder_features(data['inputs'])  # E^t, its channels checked
                gt = torch.stack([sample.gt_sem_seg.data for sample in data['data_samples']])  # (N, 1, H, W)
                labels = F.interpolate(gt.float(), size=feats.shape[-2:], mode='nearest').squeeze(1).long()
                reservoir.add(feats, labels)
                num_images += feats.shape[0]
            if progress is not None:
                progress.update()
        if progress is not None:
            progress.file.write('\n')
        del dataloader
        reservoir.merge_across_ranks()
        if dist.get_world_size() > 1:
            total = torch.tensor([num_images], dtype=torch.long, device=dist.get_comm_device())
            dist.all_reduce(total, op='sum')
            num_images = int(total.item())
        return reservoir, num_images

    @staticmethod
    def _split_by_size(data_batch: Dict):
        """Sub-batches (same dict layout) of the images of ``data_batch`` that share one (H, W), in order."""
        inputs, samples = data_batch['inputs'], data_batch['data_samples']
        groups: Dict[tuple, list] = {}
        for i, image in enumerate(inputs):
            groups.setdefault(tuple(image.shape[-2:]), []).append(i)
        for indices in groups.values():
            yield dict(inputs=[inputs[i] for i in indices], data_samples=[samples[i] for i in indices])

    def _log(self, report: Dict, num_images: int, reservoir: ClassPixelReservoir, seconds: float,
             iteration: int) -> None:
        lines = [f'PrototypeInitHook: prototypes ({report["num_classes"]}, {report["num_parts"]}, {reservoir.dim}) '
                 f'initialised by K-means from {num_images} labeled images in {seconds:.1f} s. Pixels per class '
                 f'(seen / clustered; init_at={self.init_at!r}, iter {iteration}):']
        for c, entry in enumerate(report['per_class']):
            lines.append(f'  class {c}: {entry["seen"]} / {entry["sampled"]} ({entry["status"]})')
        print_log('\n'.join(lines), logger='current')
        k = report['num_parts']
        if report['absent']:
            print_log(f'PrototypeInitHook: classes {report["absent"]} have no labeled pixel; their {k} prototypes '
                      'are zeros until Eq. 12 moves them.', logger='current', level=logging.WARNING)
        if report['fewer_than_k']:
            print_log(f'PrototypeInitHook: classes {report["fewer_than_k"]} have fewer than K={k} sampled pixels; '
                      'their pixels are repeated to fill K prototypes (raise max_pixels_per_class, or lower '
                      'num_parts).', logger='current', level=logging.WARNING)
        for c, entry in enumerate(report['per_class']):
            for message in entry['warnings']:
                print_log(f'PrototypeInitHook: K-means of class {c}: {message}', logger='current',
                          level=logging.WARNING)
