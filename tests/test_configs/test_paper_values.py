"""The paper's values (§4.1, Tables 1-4) as they stand in the loaded configs of configs/esl/.

Every Table-1 config is loaded as a user would load it (no override) and checked against the paper, written here
independently of the configs: optimizer, learning rates and multipliers, weight decay, iterations (from the
partition sizes), crop, batch, evaluation, OHEM, and ESL's λ1, λ2, η, K, ζ, σ, N_s, L, τ, anchors, θ, and the teacher
decay. Where ../shared/splits holds the published split files, the split paths of the configs are checked against
them (ids per partition, disjointness, and the iteration count recomputed from the real unlabeled set).
"""
import copy
import functools
import glob
import math
import os.path as osp

import pytest
from conftest import REPO_ROOT
from mmengine.config import Config

ESL_DIR = osp.join(REPO_ROOT, 'configs', 'esl')
SHARED_SPLITS = osp.join(osp.dirname(REPO_ROOT), 'shared', 'splits')

# Table 1: (config, dataset, labeled, unlabeled, paper ESL mIoU, paper Sup mIoU). VOC train_aug = 10,582 images,
# Cityscapes train = 2,975 (§4.1).
TABLE1 = [
    ('voc_1-16', 'voc', 92, 10582 - 92, 70.97, 45.77),
    ('voc_1-8', 'voc', 183, 10582 - 183, 74.06, 54.92),
    ('voc_1-4', 'voc', 366, 10582 - 366, 78.14, 65.88),
    ('voc_1-2', 'voc', 732, 10582 - 732, 79.53, 71.69),
    ('voc_full', 'voc', 1464, 10582 - 1464, 81.77, 72.50),
    ('voc-aug_1-16', 'voc', 662, 10582 - 662, 76.36, 67.87),
    ('voc-aug_1-8', 'voc', 1323, 10582 - 1323, 78.57, 71.55),
    ('voc-aug_1-4', 'voc', 2646, 10582 - 2646, 79.02, 75.80),
    ('voc-aug_1-2', 'voc', 5291, 10582 - 5291, 79.98, 77.13),
    ('cityscapes_1-16', 'cityscapes', 186, 2975 - 186, 75.12, 65.74),
    ('cityscapes_1-8', 'cityscapes', 372, 2975 - 372, 77.15, 72.53),
    ('cityscapes_1-4', 'cityscapes', 744, 2975 - 744, 78.93, 74.43),
    ('cityscapes_1-2', 'cityscapes', 1488, 2975 - 1488, 80.46, 77.83),
]
# §4.1 per dataset: backbone lr, weight decay, epochs, crop.
PAPER = dict(voc=dict(lr=1e-3, weight_decay=1e-4, epochs=80, crop=(513, 513), num_classes=21),
             cityscapes=dict(lr=1e-2, weight_decay=5e-4, epochs=200, crop=(769, 769), num_classes=19))
GPUS, LABELED_PER_ITER, UNLABELED_PER_ITER = 8, 8, 8


def esl_path(protocol: str) -> str:
    return osp.join(ESL_DIR, f'esl_r101_{protocol}.py')


@functools.lru_cache(maxsize=None)
def _load(path: str) -> Config:
    return Config.fromfile(path)


def load(path: str) -> Config:
    """The config as Config.fromfile loads it (cached; each call returns a copy)."""
    return copy.deepcopy(_load(path))


def hook(cfg: Config, kind: str) -> dict:
    matches = [h for h in cfg.custom_hooks if h['type'] == kind]
    assert len(matches) == 1, f'{kind}: {cfg.custom_hooks}'
    return matches[0]


def test_every_table1_cell_has_its_files():
    names = {osp.basename(p) for p in glob.glob(osp.join(ESL_DIR, '*.py'))}
    for protocol, *_ in TABLE1:
        assert f'esl_r101_{protocol}.py' in names and f'sup_r101_{protocol}.py' in names, protocol


@pytest.mark.parametrize('protocol, dataset, n_l, n_u, esl_miou, sup_miou', TABLE1, ids=[t[0] for t in TABLE1])
def test_table1_esl_config_has_the_paper_values(protocol, dataset, n_l, n_u, esl_miou, sup_miou):
    path = esl_path(protocol)
    cfg = load(path)
    paper = PAPER[dataset]
    text = open(path).read()

    # Model: ESLSegmentor around DeepLabv3+ on ResNet-101 V1c, output stride 8, ImageNet weights, no auxiliary head.
    assert cfg.model.type == 'ESLSegmentor'
    seg = cfg.model.segmentor
    assert seg.type == 'EncoderDecoder' and seg.pretrained == 'open-mmlab://resnet101_v1c'
    assert seg.backbone.type == 'ResNetV1c' and seg.backbone.depth == 101
    assert tuple(seg.backbone.strides) == (1, 2, 1, 1) and tuple(seg.backbone.dilations) == (1, 1, 2, 4)  # OS 8
    assert seg.decode_head.type == 'DepthwiseSeparableASPPHead' and seg.decode_head.num_classes == paper['num_classes']
    assert tuple(seg.decode_head.dilations) == (1, 12, 24, 36)
    assert seg.get('auxiliary_head') is None  # Eq. 11 has no auxiliary loss
    assert seg.backbone.norm_cfg.type == 'SyncBN' and seg.decode_head.norm_cfg.type == 'SyncBN'

    # ESL (Eq. 3-12): λ1, η, K, ζ, anchors, N_s, σ, τ, θ, λ2, L.
    semi = cfg.model.semi_train_cfg
    assert semi.loss_unsup == dict(type='DSLLoss', mode='dsl', eta=0.95, loss_weight=0.2)
    contrast = semi.loss_contrast
    assert contrast.type == 'PixelPartContrastLoss' and contrast.feat_channels == 2048 and contrast.in_index == -1
    assert (contrast.num_parts, contrast.conf_thresh, contrast.anchor_ratio) == (5, 0.95, 0.1)
    assert (contrast.num_negatives, contrast.temperature, contrast.stride) == (255, 0.5, 4)
    assert (contrast.prototype_momentum, contrast.loss_weight) == (0.99, 0.1)
    assert cfg.model.projector.out_channels == 512
    assert semi.cutmix.prob == 1.0  # CutMix is the strong view (§4.1)
    assert cfg.model.semi_test_cfg.predict_on == 'teacher'
    assert hook(cfg, 'EMATeacherHook')['decay'] == 0.99  # U2PL's ema_decay (the paper gives none)
    # U2PL's teacher schedule (not in the paper): one epoch (a pass over the unlabeled set) supervised only, then
    # one epoch with teacher = student.
    epoch = math.ceil(n_u / UNLABELED_PER_ITER)
    assert hook(cfg, 'EMATeacherHook')['sup_only_iters'] == epoch
    assert hook(cfg, 'EMATeacherHook')['copy_iters'] == epoch

    # Optimizer (§4.1): SGD, backbone lr, x10 for decoder + segmentation head and projector, weight decay.
    opt = cfg.optim_wrapper
    assert opt.constructor == 'StudentOptimWrapperConstructor'
    assert opt.optimizer.type == 'SGD' and opt.optimizer.lr == paper['lr']
    assert opt.optimizer.weight_decay == paper['weight_decay']
    keys = opt.paramwise_cfg.custom_keys
    assert keys['decode_head'] == dict(lr_mult=10.0) and keys['projector'] == dict(lr_mult=10.0)
    assert not any('backbone' in k for k in keys)  # the backbone keeps the base rate
    assert [s.type for s in cfg.param_scheduler] == ['PolyLR'] and 'end' not in cfg.param_scheduler[0]

    # Iterations: epochs over the unlabeled set at 8 unlabeled images per iteration (U2PL's epoch).
    iters = math.ceil(paper['epochs'] * n_u / UNLABELED_PER_ITER)
    assert cfg.train_cfg.max_iters == iters
    assert f'{iters:,}' in text, 'the file states its iteration count and the arithmetic'

    # Batch: 1 labeled + 1 unlabeled (+ 1 CutMix partner) per GPU on 8 GPUs = 8 + 8 in total.
    sampler = cfg.train_dataloader.sampler
    assert sampler.type == 'SemiSupervisedSampler' and sampler.cutmix_partners is True
    assert sampler.num_labeled * GPUS == LABELED_PER_ITER and sampler.num_unlabeled * GPUS == UNLABELED_PER_ITER
    assert cfg.train_dataloader.batch_size == sampler.num_labeled + 2 * sampler.num_unlabeled
    assert f'tools/dist_train.sh configs/esl/{osp.basename(path)} 8' in text
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=GPUS * cfg.train_dataloader.batch_size)

    # Crop and weak augmentation: resize x[0.5, 2], crop, flip; the preprocessor pads to the crop.
    labeled, unlabeled = cfg.train_dataloader.dataset.datasets
    for ds in (labeled, unlabeled):
        steps = {t['type']: t for t in ds.pipeline}
        assert tuple(steps['RandomCrop']['crop_size']) == paper['crop']
        assert tuple(steps['RandomResize']['ratio_range']) == (0.5, 2.0) and steps['RandomFlip']['prob'] == 0.5
    assert tuple(seg.data_preprocessor.size) == paper['crop'] and tuple(cfg.data_preprocessor.size) == paper['crop']
    assert labeled.get('with_labels', True) is True and unlabeled.with_labels is False
    assert hook(cfg, 'PrototypeInitHook')['dataloader']['dataset']['split_file'] == labeled.split_file

    # Evaluation: VOC centre crop 513 (U2PL), Cityscapes sliding window 769 (stride 513) with OHEM in training.
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        types = [t['type'] for t in loader.dataset.pipeline]
        if dataset == 'voc':
            crop = loader.dataset.pipeline[types.index('PadCenterCrop')]
            assert types.index('PadCenterCrop') == 2 and tuple(crop['crop_size']) == paper['crop']
        else:
            assert 'PadCenterCrop' not in types
    if dataset == 'voc':
        assert seg.test_cfg.mode == 'whole' and seg.decode_head.get('sampler') is None
    else:
        assert seg.test_cfg == dict(mode='slide', crop_size=paper['crop'], stride=(513, 513))
        assert seg.decode_head.sampler == dict(type='OHEMPixelSampler', thresh=0.7, min_kept=100000)

    assert str(esl_miou) in text  # the paper cell's mIoU is in the file's comment


@pytest.mark.parametrize('protocol, dataset, n_l, n_u, esl_miou, sup_miou', TABLE1, ids=[t[0] for t in TABLE1])
def test_table1_sup_baseline_matches_its_esl_config(protocol, dataset, n_l, n_u, esl_miou, sup_miou):
    sup = load(osp.join(ESL_DIR, f'sup_r101_{protocol}.py'))
    esl = load(esl_path(protocol))
    assert sup.model.type == 'EncoderDecoder'
    assert sup.model.backbone == esl.model.segmentor.backbone
    assert sup.model.decode_head == esl.model.segmentor.decode_head and sup.model.get('auxiliary_head') is None
    assert sup.model.test_cfg == esl.model.segmentor.test_cfg
    assert sup.optim_wrapper.optimizer == esl.optim_wrapper.optimizer
    assert sup.optim_wrapper.paramwise_cfg == esl.optim_wrapper.paramwise_cfg
    assert sup.train_dataloader.dataset.split_file == esl.train_dataloader.dataset.datasets[0].split_file
    assert sup.train_dataloader.sampler.type == 'InfiniteSampler'
    # 8 labeled images per iteration (2 per GPU on 4 GPUs); epochs over the labeled set (U2PL's train_sup.py).
    assert sup.train_dataloader.batch_size * 4 == LABELED_PER_ITER
    assert sup.train_cfg.max_iters == math.ceil(PAPER[dataset]['epochs'] * n_l / LABELED_PER_ITER)
    assert sup.val_dataloader == esl.val_dataloader
    assert str(sup_miou) in open(osp.join(ESL_DIR, f'sup_r101_{protocol}.py')).read()


@pytest.mark.skipif(not osp.isdir(SHARED_SPLITS), reason='../shared/splits (published split files) is not present')
@pytest.mark.parametrize('protocol, dataset, n_l, n_u, esl_miou, sup_miou', TABLE1, ids=[t[0] for t in TABLE1])
def test_split_paths_are_the_published_files(protocol, dataset, n_l, n_u, esl_miou, sup_miou):
    """data/<dataset>/splits/ mirrors the repositories' layout, as ../shared/splits does."""
    from mmseg_esl.datasets import read_split
    cfg = load(esl_path(protocol))
    labeled_ds, unlabeled_ds = cfg.train_dataloader.dataset.datasets
    published = []
    for ds in (labeled_ds, unlabeled_ds):
        assert ds.split_file.startswith('splits/'), ds.split_file
        published.append(read_split(osp.join(SHARED_SPLITS, ds.split_file[len('splits/'):])))
    labeled, unlabeled = published
    assert len(labeled) == n_l and len(unlabeled) == n_u and not set(labeled) & set(unlabeled)
    epochs = PAPER[dataset]['epochs']
    assert cfg.train_cfg.max_iters == math.ceil(epochs * len(unlabeled) / UNLABELED_PER_ITER)
    if protocol.startswith('voc_'):  # classic: labeled images from the 1,464 finely annotated ones
        fine = set(read_split(osp.join(SHARED_SPLITS, 'u2pl', 'pascal', '1464', 'labeled.txt')))
        assert set(labeled) <= fine
    if protocol.startswith('voc-aug_'):  # blender default = CPS splits, not U2PL's biased ones
        assert '/cps/' in '/' + labeled_ds.split_file
        assert labeled_ds.split_file.replace('labeled', 'unlabeled') == unlabeled_ds.split_file
    if protocol.startswith('cityscapes_'):  # U2PL's splits (Table 1 (c) borrows U2PL's numbers)
        assert labeled_ds.split_file.startswith('splits/u2pl/cityscapes/')


def flat(node, prefix=''):
    """Dotted key -> value of a config tree (lists by index)."""
    out = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(flat(value, f'{prefix}{key}.'))
    elif isinstance(node, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in node):
        for i, value in enumerate(node):
            out.update(flat(value, f'{prefix}{i}.'))
    else:
        out[prefix[:-1]] = node
    return out


def differences(path: str, reference: str) -> dict:
    a, b = flat(load(path).to_dict()), flat(load(reference).to_dict())
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not k.startswith('custom_hooks.')}  # hooks: compared by type below


FULL = esl_path('voc_full')
# Table 2-4 and the MT baseline: each file changes ESL (classic VOC, full partition) in exactly these keys.
ABLATIONS = [
    ('mt-hard_r101_voc_full.py', {'model.semi_train_cfg.loss_unsup.mode': 'hard',
                                  'model.semi_train_cfg.loss_contrast.num_parts': 0}),
    ('ablations/mt-hard-ctr_r101_voc_full.py', {'model.semi_train_cfg.loss_unsup.mode': 'hard'}),
    ('ablations/mt-dsl_r101_voc_full.py', {'model.semi_train_cfg.loss_contrast.num_parts': 0}),
    ('ablations/mt-dsl-eta0.80_r101_voc_full.py', {'model.semi_train_cfg.loss_contrast.num_parts': 0,
                                                   'model.semi_train_cfg.loss_unsup.eta': 0.8}),
    ('ablations/mt-dsl-eta0.90_r101_voc_full.py', {'model.semi_train_cfg.loss_contrast.num_parts': 0,
                                                   'model.semi_train_cfg.loss_unsup.eta': 0.9}),
    ('ablations/mt-dsl-eta0.99_r101_voc_full.py', {'model.semi_train_cfg.loss_contrast.num_parts': 0,
                                                   'model.semi_train_cfg.loss_unsup.eta': 0.99}),
    ('ablations/mt-top5_r101_voc_full.py', {'model.semi_train_cfg.loss_contrast.num_parts': 0,
                                            'model.semi_train_cfg.loss_unsup.mode': 'top_k',
                                            'model.semi_train_cfg.loss_unsup.top_k': 5}),
    ('ablations/esl-k1_r101_voc_full.py', {'model.semi_train_cfg.loss_contrast.num_parts': 1}),
    ('ablations/esl-k3_r101_voc_full.py', {'model.semi_train_cfg.loss_contrast.num_parts': 3}),
    ('ablations/esl-k7_r101_voc_full.py', {'model.semi_train_cfg.loss_contrast.num_parts': 7}),
    ('ablations/esl-k10_r101_voc_full.py', {'model.semi_train_cfg.loss_contrast.num_parts': 10}),
]


@pytest.mark.parametrize('name, changed', ABLATIONS, ids=[a[0] for a in ABLATIONS])
def test_ablation_changes_only_its_table_keys(name, changed):
    path = osp.join(ESL_DIR, name)
    diff = differences(path, FULL)
    assert {k: v[0] for k, v in diff.items()} == changed, diff
    cfg = load(path)
    hooks = [h['type'] for h in cfg.custom_hooks]
    assert cfg.custom_hooks[0] == load(FULL).custom_hooks[0]  # the same EMATeacherHook settings
    if cfg.model.semi_train_cfg.loss_contrast.num_parts == 0:  # no contrast: no prototypes to initialise
        assert hooks == ['EMATeacherHook', 'RNGStateHook']
    else:
        assert hooks == ['EMATeacherHook', 'PrototypeInitHook', 'RNGStateHook']
        assert cfg.custom_hooks[1] == load(FULL).custom_hooks[1]


@pytest.mark.parametrize('protocol', ['voc_1-16', 'voc_1-8', 'voc_1-4', 'voc_1-2'])
def test_mt_hard_baselines_of_every_classic_protocol(protocol):
    diff = differences(osp.join(ESL_DIR, f'mt-hard_r101_{protocol}.py'), esl_path(protocol))
    assert {k: v[0] for k, v in diff.items()} == {'model.semi_train_cfg.loss_unsup.mode': 'hard',
                                                  'model.semi_train_cfg.loss_contrast.num_parts': 0}


def test_whole_image_evaluation_by_the_documented_cfg_options():
    from mmseg.registry import TRANSFORMS

    import mmseg_esl  # noqa: F401
    cfg = load(esl_path('voc_1-8'))
    cfg.merge_from_dict({'val_dataloader.dataset.pipeline.2.crop_size': None,
                         'test_dataloader.dataset.pipeline.2.crop_size': None})
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        step = loader.dataset.pipeline[2]
        assert step['type'] == 'PadCenterCrop' and step['crop_size'] is None
        transform = TRANSFORMS.build(step)
        results = dict(img=object(), ori_shape=(375, 500))
        assert transform.transform(results) is results and results['ori_shape'] == (375, 500)
    documented = open(osp.join(REPO_ROOT, 'configs', '_base_', 'datasets', 'voc_semi.py')).read()
    assert ('val_dataloader.dataset.pipeline.2.crop_size=None test_dataloader.dataset.pipeline.2.crop_size=None'
            in documented)


def test_auxiliary_head_is_selectable_as_documented(tmp_path):
    child = tmp_path / 'esl_with_aux.py'
    child.write_text(f"_base_ = ['{esl_path('voc_1-8')}']\n"
                     "model = dict(segmentor=dict(auxiliary_head=dict(_base_.fcn_auxiliary_head, num_classes=21, "
                     "_delete_=True)))\n")
    cfg = load(str(child))
    aux = cfg.model.segmentor.auxiliary_head
    assert aux.type == 'FCNHead' and aux.in_channels == 1024 and aux.loss_decode.loss_weight == 0.4
    assert aux.num_classes == 21 and aux.norm_cfg.type == 'SyncBN'
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys['auxiliary_head'] == dict(lr_mult=10.0)


def test_headline_optimizer_groups_as_built():
    """Built from esl_r101_voc_1-8.py: backbone at 1e-3, decoder + segmentation head and projector at 1e-2, no
    teacher parameter in the optimizer."""
    import torch
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

    import mmseg_esl  # noqa: F401
    from mmseg_esl.utils import convert_sync_bn_cfg
    init_default_scope('mmseg')
    cfg = load(esl_path('voc_1-8'))
    convert_sync_bn_cfg(cfg, warn=False)
    cfg.model.segmentor.pretrained = None
    model = MODELS.build(cfg.model)
    wrapper_cfg = cfg.optim_wrapper.copy()
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type=wrapper_cfg.pop('constructor'), optim_wrapper_cfg=wrapper_cfg,
        paramwise_cfg=wrapper_cfg.pop('paramwise_cfg')))
    optimizer = constructor(model).optimizer
    lr_of = {id(p): g['lr'] for g in optimizer.param_groups for p in g['params']}
    student = dict(model.student.named_parameters())
    assert set(lr_of) == {id(p) for p in student.values()}  # the teacher is not optimised
    for name, param in student.items():
        expected = 1e-3 if name.startswith('backbone.') else 1e-2
        assert lr_of[id(param)] == pytest.approx(expected), name
    assert any(n.startswith('projector.') for n in student) and any(n.startswith('decode_head.') for n in student)
    assert all(g['weight_decay'] == 1e-4 for g in optimizer.param_groups)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults['momentum'] == 0.9


def test_readme_lists_every_paper_config():
    readme = open(osp.join(REPO_ROOT, 'README.md')).read()
    assert 'tools/dist_train.sh configs/esl/esl_r101_voc_1-8.py 8' in readme
    paper_configs = [p for p in glob.glob(osp.join(ESL_DIR, '**', '*.py'), recursive=True)
                     if 'demo' not in p and 'tiny' not in p]
    missing = [osp.relpath(p, ESL_DIR) for p in paper_configs if osp.relpath(p, ESL_DIR) not in readme]
    assert not missing, f'README.md does not mention: {missing}'


def test_every_esl_config_saves_rng_states_for_an_exact_resume():
    """RNGStateHook (docs/reliability.md) in every teacher/student config of configs/esl/, exactly once."""
    missing = []
    for path in sorted(glob.glob(osp.join(ESL_DIR, '**', '*.py'), recursive=True)):
        cfg = load(path)
        if cfg.model.get('type') != 'ESLSegmentor':
            continue
        hooks = [h['type'] for h in cfg.get('custom_hooks', [])]
        if hooks.count('RNGStateHook') != 1:
            missing.append((osp.relpath(path, ESL_DIR), hooks))
    assert not missing, missing
