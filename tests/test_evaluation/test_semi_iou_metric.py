"""SemiIoUMetric: mmseg's IoUMetric for the predicting model, the teacher and the student."""
import pytest
import torch

import mmseg_esl  # noqa: F401
from mmseg_esl.evaluation import SemiIoUMetric

CLASSES = ('a', 'b', 'c')


def sample(gt, pred, teacher=None, student=None) -> dict:
    out = dict(gt_sem_seg=dict(data=gt[None]), pred_sem_seg=dict(data=pred[None]))
    if teacher is not None:
        out['teacher_pred_sem_seg'] = dict(data=teacher[None])
    if student is not None:
        out['student_pred_sem_seg'] = dict(data=student[None])
    return out


def evaluate(metric, samples):
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, samples)
    return metric.evaluate(len(samples))


def iou(samples, key):
    """Reference: mmseg's IoUMetric on ``key`` used as the prediction."""
    from mmseg.evaluation import IoUMetric
    metric = IoUMetric(iou_metrics=['mIoU'])
    return evaluate(metric, [dict(gt_sem_seg=s['gt_sem_seg'], pred_sem_seg=s[key]) for s in samples])


def random_maps(seed, n=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 3, (4, 5), generator=g) for _ in range(n)]


def test_each_model_is_scored_like_iou_metric():
    gts, teachers, students = random_maps(0), random_maps(1), random_maps(2)
    samples = [sample(g, t, t, s) for g, t, s in zip(gts, teachers, students)]
    result = evaluate(SemiIoUMetric(iou_metrics=['mIoU']), samples)
    assert set(result) == {'aAcc', 'mIoU', 'mAcc', 'teacher/aAcc', 'teacher/mIoU', 'teacher/mAcc', 'student/aAcc',
                           'student/mIoU', 'student/mAcc'}
    for key, value in iou(samples, 'teacher_pred_sem_seg').items():
        assert result[f'teacher/{key}'] == value and result[key] == value
    for key, value in iou(samples, 'student_pred_sem_seg').items():
        assert result[f'student/{key}'] == value
    assert result['teacher/mIoU'] != result['student/mIoU']


def test_test_step_samples_give_the_plain_keys_only():
    gts, preds = random_maps(0), random_maps(1)
    result = evaluate(SemiIoUMetric(iou_metrics=['mIoU']), [sample(g, p) for g, p in zip(gts, preds)])
    assert set(result) == {'aAcc', 'mIoU', 'mAcc'}


def test_samples_that_disagree_are_refused():
    gts, preds = random_maps(0), random_maps(1)
    samples = [sample(gts[0], preds[0], preds[0], preds[0]), sample(gts[1], preds[1])]
    with pytest.raises(ValueError, match='1 of 2 samples carry teacher_pred_sem_seg'):
        evaluate(SemiIoUMetric(iou_metrics=['mIoU']), samples)
