"""Prediction of the ESL wrapper: mmseg's inference API delegated to the model ``semi_test_cfg`` names."""
from __future__ import annotations

import copy
from typing import List, Optional, Tuple

from mmseg.models.segmentors import BaseSegmentor
from mmseg.utils import OptSampleList, SampleList
from torch import Tensor


def parse_semi_test_cfg(semi_test_cfg: Optional[dict]) -> Tuple[str, bool]:
    """``(predict_on, val_both)`` of ``semi_test_cfg``, defaults ``('teacher', True)``.

    Raises:
        ValueError: For a ``predict_on`` other than ``'teacher'``/``'student'`` or a non-bool ``val_both``.
        KeyError: For any other key.
    """
    semi_test_cfg = dict(semi_test_cfg or {})
    predict_on = semi_test_cfg.pop('predict_on', 'teacher')
    if predict_on not in ('teacher', 'student'):
        raise ValueError(f"semi_test_cfg.predict_on must be 'teacher' or 'student', got {predict_on!r}.")
    val_both = semi_test_cfg.pop('val_both', True)
    if not isinstance(val_both, bool):
        raise ValueError(f'semi_test_cfg.val_both must be True or False, got {val_both!r}.')
    if semi_test_cfg:
        raise KeyError(f'Unknown semi_test_cfg key(s) {sorted(semi_test_cfg)}; known: predict_on, val_both.')
    return predict_on, val_both


class InferenceMixin:
    """What mmseg's predict/TTA/benchmark read, delegated to :attr:`inference_model`, and ``val_step`` on both.

    For a ``BaseSegmentor`` subclass with ``student`` and ``teacher`` segmentors and the attributes
    ``predict_on``/``val_both`` of :func:`parse_semi_test_cfg`; list it before ``BaseSegmentor`` in the bases.
    """

    student: BaseSegmentor
    teacher: BaseSegmentor
    predict_on: str
    val_both: bool

    @property
    def inference_model(self) -> BaseSegmentor:
        """The wrapped segmentor used by ``predict``/``_forward`` (``semi_test_cfg.predict_on``)."""
        return getattr(self, self.predict_on)

    @property
    def decode_head(self):
        return self.inference_model.decode_head

    @property
    def align_corners(self) -> bool:
        return self.inference_model.align_corners

    @property
    def num_classes(self) -> int:
        return self.inference_model.num_classes

    @property
    def out_channels(self) -> int:
        return self.inference_model.out_channels

    def extract_feat(self, inputs: Tensor) -> List[Tensor]:
        return self.inference_model.extract_feat(inputs)

    def encode_decode(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        return self.inference_model.encode_decode(inputs, batch_img_metas)

    def predict(self, inputs: Tensor, data_samples: OptSampleList = None) -> SampleList:
        return self.inference_model.predict(inputs, data_samples)

    def _forward(self, inputs: Tensor, data_samples: OptSampleList = None) -> Tensor:
        return self.inference_model._forward(inputs, data_samples)

    def val_step(self, data) -> SampleList:
        """``predict`` with ``predict_on``; with ``val_both`` also ``teacher_pred_sem_seg``/``student_pred_sem_seg``.

        Only validation during training (mmengine's ``ValLoop``) calls ``val_step``; ``tools/test.py`` and
        benchmarks call ``test_step``, which runs the ``predict_on`` model alone.
        """
        data = self.data_preprocessor(data, False)
        if not self.val_both:
            return self._run_forward(data, mode='predict')
        other = 'student' if self.predict_on == 'teacher' else 'teacher'
        other_samples = copy.deepcopy(data['data_samples'])
        samples = self._run_forward(data, mode='predict')
        others = getattr(self, other).predict(data['inputs'], other_samples)
        for sample, other_sample in zip(samples, others):
            sample.set_field(sample.pred_sem_seg, f'{self.predict_on}_pred_sem_seg')
            sample.set_field(other_sample.pred_sem_seg, f'{other}_pred_sem_seg')
        return samples
