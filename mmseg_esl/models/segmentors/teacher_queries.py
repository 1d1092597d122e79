"""What hooks and analysis tools ask of the EMA teacher: ``p^t`` (Eq. 1), ``E^t`` and part maps (Eq. 7)."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from mmseg.models.segmentors import BaseSegmentor
from mmseg.models.utils import resize
from mmseg.utils import SampleList
from torch import Tensor


class TeacherQueriesMixin:
    """The teacher-side API of ``ESLSegmentor`` (PrototypeInitHook, PseudoLabelVisHook, tools/analysis).

    Needs ``teacher`` (a segmentor), ``contrast_loss`` (``PixelPartContrastLoss`` or None), ``data_preprocessor``
    and ``split_batch``, as ``ESLSegmentor`` has. All queries run without gradient.
    """

    teacher: BaseSegmentor
    contrast_loss: Optional[torch.nn.Module]

    def teacher_probs(self, inputs: Tensor) -> Tensor:
        """Teacher probabilities ``p^t`` (Eq. 1) at input resolution, in fp32, without gradient.

        Args:
            inputs: Weakly augmented images ``(N, 3, H, W)``.

        Returns:
            ``(N, C, H, W)`` fp32 softmax probabilities.
        """
        with torch.no_grad():
            logits = self.teacher.decode_head.forward(self.teacher.extract_feat(inputs))
            return self._upsampled_probs(logits, inputs.shape[2:])

    def _upsampled_probs(self, logits: Tensor, size: Tuple[int, int]) -> Tensor:
        logits = resize(logits.float(), size=size, mode='bilinear', align_corners=self.teacher.align_corners)
        return logits.softmax(dim=1)

    @torch.no_grad()
    def teacher_encoder_features(self, inputs: Tensor) -> Tensor:
        """``E^t = teacher.extract_feat(inputs)[loss_contrast.in_index]`` ``(N, L', h', w')`` (Eq. 7, 12).

        Raises:
            ValueError: Naming ``semi_train_cfg.loss_contrast.in_index`` / ``feat_channels`` when they do not fit
                the backbone's outputs, or when the contrastive term is off.
        """
        contrast = self.contrast_loss
        if contrast is None:
            raise ValueError('E^t is the contrastive term\'s input, which is off (semi_train_cfg.loss_contrast.'
                             'num_parts=0 or loss_contrast=None).')
        outputs = self.teacher.extract_feat(inputs)
        if isinstance(outputs, Tensor):
            outputs = [outputs]
        in_index, dim = int(contrast.in_index), int(contrast.feat_channels)
        if not -len(outputs) <= in_index < len(outputs):
            raise ValueError(f'teacher.extract_feat(x) returns {len(outputs)} feature maps, so '
                             f'semi_train_cfg.loss_contrast.in_index={in_index} names none; use -1 for the last '
                             'backbone stage.')
        feats = outputs[in_index]
        if feats.ndim != 4 or feats.shape[1] != dim:
            raise ValueError(
                f'E^t = teacher.extract_feat(x)[{in_index}] has shape {tuple(feats.shape)}, i.e. '
                f'{feats.shape[1] if feats.ndim == 4 else "?"} channels, but '
                f'semi_train_cfg.loss_contrast.feat_channels={dim}. Set feat_channels to the channels of that '
                f'backbone output (e.g. 2048 for ResNet-101 layer4), or choose another output with '
                f'semi_train_cfg.loss_contrast.in_index (now {in_index}).')
        return feats

    @torch.no_grad()
    def unlabeled_teacher_probs(self, data_batch: dict, max_images: int) -> Tuple[List[int], SampleList, Tensor]:
        """``p^t`` (Eq. 1) of the first ``max_images`` unlabeled weak views of a training batch, as ``loss`` sees
        them (the data preprocessor, then ``split_batch``).

        Args:
            data_batch: The batch as the data loader gives it.
            max_images: How many unlabeled images at most.

        Returns:
            ``(positions, samples, probs)``: the images' positions in the batch, their preprocessed samples
            (``img_shape`` without padding) and ``(U', C, H, W)`` fp32 probabilities; ``([], [], None)`` when the
            batch has no unlabeled image.
        """
        data = self.data_preprocessor(data_batch, True)
        _, unlabeled, _ = self.split_batch(data['data_samples'])
        chosen = unlabeled[:max_images]
        if not chosen:
            return [], [], None
        return chosen, [data['data_samples'][i] for i in chosen], self.teacher_probs(data['inputs'][chosen])

    @torch.no_grad()
    def teacher_part_maps(self, inputs: Tensor, class_map: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Eq. 7 on the teacher: the part of each pixel of ``class_map`` (default: the teacher's arg-max).

        Args:
            inputs: Images ``(N, 3, H, W)``.
            class_map: ``(N, H', W')`` long classes (ignore index where unknown), any resolution.

        Returns:
            ``(class_map, parts)``, both ``(N, H', W')`` long (``(N, H, W)`` for the teacher's arg-max); parts
            are -1 where the class is ignored.
        """
        if class_map is None:
            class_map = self.teacher_probs(inputs).argmax(dim=1)
        enc = self.teacher_encoder_features(inputs)
        parts = self.contrast_loss.assign(enc, class_map.to(enc.device), align_corners=self.teacher.align_corners)
        return class_map, parts
