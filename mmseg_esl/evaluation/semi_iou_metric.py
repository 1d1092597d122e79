"""mmseg's ``IoUMetric`` for the predicting model, and for teacher and student when the batch carries both."""
from typing import Dict, Sequence

from mmengine.logging import print_log
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS

#: Models whose predictions ``ESLSegmentor.val_step`` adds as ``<name>_pred_sem_seg``.
SCORED_MODELS = ('teacher', 'student')


@METRICS.register_module()
class SemiIoUMetric(IoUMetric):
    """``IoUMetric`` of ``pred_sem_seg`` (unprefixed keys: ``mIoU``, ...) plus ``teacher/*`` and ``student/*``.

    During training, ``ESLSegmentor.val_step`` predicts with both models (``semi_test_cfg.val_both``) and
    stores ``teacher_pred_sem_seg`` and ``student_pred_sem_seg``; this metric scores each with mmseg's own
    ``intersect_and_union`` / ``compute_metrics``. ``tools/test.py`` runs ``test_step``, which predicts with
    ``semi_test_cfg.predict_on`` only: then only the unprefixed keys are reported, as with ``IoUMetric``. So
    one config entry serves as both ``val_evaluator`` and ``test_evaluator``. Arguments are ``IoUMetric``'s.
    """

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Appends ``(IoUMetric's tuple, {model: its tuple})`` per sample."""
        start = len(self.results)
        super().process(data_batch, data_samples)
        if self.format_only:
            return
        num_classes = len(self.dataset_meta['classes'])
        for offset, sample in enumerate(data_samples):
            label = sample['gt_sem_seg']['data'].squeeze()
            per_model = {}
            for name in SCORED_MODELS:
                if f'{name}_pred_sem_seg' in sample:
                    pred = sample[f'{name}_pred_sem_seg']['data'].squeeze()
                    per_model[name] = self.intersect_and_union(pred, label.to(pred), num_classes, self.ignore_index)
            self.results[start + offset] = (self.results[start + offset], per_model)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """``IoUMetric.compute_metrics`` of the predicting model, then of each scored model (prefixed)."""
        if self.format_only:
            return super().compute_metrics(results)
        metrics = dict(super().compute_metrics([plain for plain, _ in results]))
        for name in SCORED_MODELS:
            scored = [per_model[name] for _, per_model in results if name in per_model]
            if not scored:
                continue
            if len(scored) != len(results):
                raise ValueError(f'SemiIoUMetric: {len(scored)} of {len(results)} samples carry '
                                 f'{name}_pred_sem_seg; every sample of a validation must have it or none.')
            print_log(f'SemiIoUMetric: the {name} model', logger='current')
            metrics.update({f'{name}/{key}': value for key, value in super().compute_metrics(scored).items()})
        return metrics
