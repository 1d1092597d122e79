"""The ESL config a train-step benchmark starts from: a config file with ``--cfg-options``, or a built-in R101.

Not :func:`mmseg_esl.analysis.load_config`: that one accepts any model and turns SyncBN into BN whenever CUDA is
missing; this one refuses a non-ESL config (the variants are derived from its ``semi_train_cfg``) and converts
SyncBN per built model, on ``--device cpu`` only.
"""
from __future__ import annotations

import copy
import os.path as osp
from typing import Optional

from mmengine.config import Config, ConfigDict

#: Built-in config name: DeepLabv3+ ResNet-101 (mmseg's model) on 21 classes with the paper's ESL settings.
BUILTIN_R101 = 'builtin:r101-voc'


def builtin_r101_config() -> Config:
    """DeepLabv3+ ResNet-101-D8 of mmseg (``_base_/models/deeplabv3plus_r50-d8.py`` with depth 101) on 21
    classes, wrapped in ``ESLSegmentor`` with the paper's settings (K = 5, λ1 = 0.2, λ2 = 0.1, projector
    256 -> 512, E^t = layer4 with 2048 channels), SGD lr 0.001 with 10x on the heads. Random init (no
    download). Used when the paper config is not available; a stand-in for timing, not for training."""
    import mmseg
    base = osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs', '_base_', 'models', 'deeplabv3plus_r50-d8.py')
    segmentor = copy.deepcopy(Config.fromfile(base).model)
    segmentor.pretrained = None
    segmentor.backbone.depth = 101
    segmentor.decode_head.num_classes = 21
    segmentor.auxiliary_head.num_classes = 21
    cfg = Config(dict(
        custom_imports=dict(imports=['mmseg_esl'], allow_failed_imports=False),
        model=dict(
            type='ESLSegmentor', segmentor=segmentor,
            semi_train_cfg=dict(
                loss_unsup=dict(type='DSLLoss', mode='dsl', eta=0.95, loss_weight=0.2),
                cutmix=dict(prob=1.0, partner='extra'),
                loss_contrast=dict(type='PixelPartContrastLoss', feat_channels=2048, num_parts=5, loss_weight=0.1)),
            semi_test_cfg=dict(predict_on='teacher')),
        optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.001, momentum=0.9, weight_decay=1e-4),
                           paramwise_cfg=dict(custom_keys=dict(decode_head=dict(lr_mult=10.0),
                                                               projector=dict(lr_mult=10.0))),
                           constructor='StudentOptimWrapperConstructor'),
        custom_hooks=[dict(type='EMATeacherHook', decay=0.99)],
        env_cfg=dict(cudnn_benchmark=True)))
    return cfg


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """The ESL config, with ``--cfg-options`` merged; raises a ValueError naming the problem if it is not one."""
    cfg = builtin_r101_config() if path == BUILTIN_R101 else Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model = cfg.get('model')
    if not model or model.get('type') != 'ESLSegmentor':
        raise ValueError(f'{path}: model.type must be ESLSegmentor (the variants are derived from its '
                         f'semi_train_cfg), got {None if not model else model.get("type")!r}. Pass an ESL config such '
                         f'as configs/esl/tiny_esl_voc.py, or --config {BUILTIN_R101}.')
    return cfg


def esl_imports() -> None:
    """Registers mmseg's and this package's modules and makes mmseg the default registry scope."""
    from mmengine.registry import init_default_scope

    import mmseg_esl  # noqa: F401  (registers ESLSegmentor, losses, hooks, the optimizer constructor)
    init_default_scope('mmseg')


def maybe_convert_sync_bn(model_cfg: ConfigDict, device: str) -> ConfigDict:
    """On CPU, SyncBN -> BN in place (``mmseg_esl.utils.sync_bn.convert_sync_bn_cfg``); on CUDA, unchanged.

    This process has no process group, so torch's ``SyncBatchNorm`` computes plain batch norm anyway (on CUDA,
    and on CPU in torch 2.x): the conversion changes no number, it only spares SyncBN's device checks on CPU.
    """
    if device == 'cpu' and 'SyncBN' in str(model_cfg):
        from mmseg_esl.utils.sync_bn import convert_sync_bn_cfg
        convert_sync_bn_cfg(model_cfg, warn=False)
    return model_cfg

