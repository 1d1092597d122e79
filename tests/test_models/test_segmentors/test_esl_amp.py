"""ESLSegmentor.loss() under mixed precision (issue 8): finite fp32 losses, fp32 teacher probabilities and state.

mmengine's ``AmpOptimWrapper`` needs CUDA; its ``optim_context`` is ``torch.autocast`` around the forward, so
the same ESL code runs here under ``torch.autocast('cpu', dtype)`` on the tiny DeepLabv3+ of the test configs.
"""
import copy
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_esl  # noqa: F401

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
SIZE = 32


@pytest.fixture(autouse=True)
def mmseg_scope():
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')


def build_tiny_esl():
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', 'esl', 'tiny_esl_voc.py'))
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.train()
    loss_fn = model.contrast_loss
    g = torch.Generator().manual_seed(1)
    loss_fn.set_prototypes_(F.normalize(torch.randn(tuple(loss_fn.prototypes.shape), generator=g), dim=-1))
    with torch.no_grad():  # a full bank, as in steady-state training
        loss_fn.bank.queues.copy_(torch.randn(tuple(loss_fn.bank.queues.shape), generator=g))
        loss_fn.bank.fill.fill_(loss_fn.bank.queue_size)
    return model


def make_batch(num_classes: int):
    """[2 labeled | 1 unlabeled | 1 partner] random images."""
    g = torch.Generator().manual_seed(2)
    inputs = torch.randn(4, 3, SIZE, SIZE, generator=g)
    samples = []
    for i in range(4):
        sample = SegDataSample(metainfo=dict(is_labeled=i < 2, img_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE),
                                             ori_shape=(SIZE, SIZE)))
        if i < 2:
            sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, SIZE, SIZE), generator=g))
        samples.append(sample)
    return inputs, samples


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_loss_under_autocast_is_finite_fp32_and_keeps_fp32_state(dtype):
    model = build_tiny_esl()
    inputs, samples = make_batch(model.num_classes)
    with torch.autocast('cpu', dtype=dtype):
        probs = model.teacher_probs(inputs[2:])
        losses = model.loss(inputs, samples)
    assert probs.dtype == torch.float32
    loss_keys = [k for k in losses if 'loss' in k]
    assert {'decode.loss_ce', 'unsup.loss_dsl', 'contrast.loss_ctr'} <= set(loss_keys)
    for key in loss_keys:
        assert losses[key].dtype == torch.float32 and torch.isfinite(losses[key]), key
    assert losses['contrast.anchors'] > 0
    total, _ = model.parse_losses(losses)
    total.backward()
    grads = [p.grad for p in model.student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in model.teacher.parameters())
    loss_fn = model.contrast_loss
    assert loss_fn.bank.queues.dtype == torch.float32 and torch.isfinite(loss_fn.bank.queues).all()
    assert loss_fn.prototypes.dtype == torch.float32 and torch.isfinite(loss_fn.prototypes).all()
