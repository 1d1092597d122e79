"""Issue 9: out-of-range hyper-parameters, disagreeing num_classes, NaN losses and checkpoints of another C/K/q/L.

Every check fires in a constructor (or a load hook), so it also fires for mmseg's own tools; the messages name the
config key, the value and the fix.
"""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.registry import DefaultScope
from mmengine.runner.checkpoint import load_state_dict
from mmseg.registry import MODELS

from mmseg_esl.models.losses import PixelPartContrastLoss
from mmseg_esl.models.segmentors.esl_segmentor import NonFiniteLossError

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
ESL_CONFIG = osp.join(REPO_ROOT, 'configs', 'esl', 'tiny_esl_voc.py')


def esl_model_cfg(**semi_train_overrides) -> dict:
    """The tiny ESL config's model with ``semi_train_cfg.<loss>.<key>`` overrides, e.g. ``loss_unsup=dict(eta=2)``."""
    model = copy.deepcopy(Config.fromfile(ESL_CONFIG).model)
    for loss, overrides in semi_train_overrides.items():
        model.semi_train_cfg[loss].update(overrides)
    return model


def build(model_cfg: dict):
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(model_cfg)


def contrast(**overrides) -> PixelPartContrastLoss:
    kwargs = dict(num_classes=4, feat_channels=8, embed_channels=8, num_parts=2, queue_size=8, num_negatives=7)
    kwargs.update(overrides)
    return PixelPartContrastLoss(**kwargs)


# ------------------------------------------------------------------------------------ hyper-parameters


@pytest.mark.parametrize('eta', [0.0, -0.5, 1.5, float('nan')])
def test_eta_outside_unit_interval_names_the_config_key(eta):
    with pytest.raises(ValueError, match=r'semi_train_cfg\.loss_unsup\.eta') as error:
        build(esl_model_cfg(loss_unsup=dict(eta=eta)))
    assert '(0, 1]' in str(error.value) and f'eta={eta!r}' in str(error.value)


def test_negative_num_parts_names_the_config_key():
    with pytest.raises(ValueError, match=r'semi_train_cfg\.loss_contrast\.num_parts') as error:
        build(esl_model_cfg(loss_contrast=dict(num_parts=-1)))
    assert 'num_parts=-1' in str(error.value) and 'integer >= 1' in str(error.value)


@pytest.mark.parametrize('zeta', [-0.1, 1.01])
def test_conf_thresh_outside_unit_interval_names_the_config_key(zeta):
    with pytest.raises(ValueError, match=r'semi_train_cfg\.loss_contrast\.conf_thresh') as error:
        build(esl_model_cfg(loss_contrast=dict(conf_thresh=zeta)))
    assert f'conf_thresh={zeta!r}' in str(error.value) and '[0, 1]' in str(error.value)


@pytest.mark.parametrize('sigma', [0, -0.5, float('inf')])
def test_temperature_sigma_not_positive_names_the_config_key(sigma):
    """σ of Eq. 10 is ``temperature`` (``unlabeled_part_thresh`` is a probability threshold, checked in [0, 1])."""
    with pytest.raises(ValueError, match=r'semi_train_cfg\.loss_contrast\.temperature') as error:
        build(esl_model_cfg(loss_contrast=dict(temperature=sigma)))
    assert 'σ of Eq. 10' in str(error.value)


def test_num_negatives_larger_than_the_bank_warns_in_the_constructor():
    """Negatives are drawn with replacement, so the module allows it (the pre-flight refuses it for a run)."""
    loss = contrast(num_negatives=7)  # (4·2 − 1)·8 = 56 slots: fine
    assert loss.negative_pool_size == 56
    with pytest.warns(UserWarning, match=r'semi_train_cfg\.loss_contrast\.num_negatives=57 exceeds the 56 bank slots'):
        contrast(num_negatives=57)
    assert contrast(negatives='class').negative_pool_size == (4 - 1) * 2 * 8


def test_bank_that_never_gives_a_negative_is_refused():
    with pytest.raises(ValueError, match=r"no queue is ever eligible.*negatives='part'"):
        contrast(num_classes=1, num_parts=2, negatives='class')
    with pytest.raises(ValueError, match='no queue is ever eligible'):
        contrast(num_classes=1, num_parts=1)


def test_num_classes_of_prototypes_and_heads_must_agree():
    with pytest.raises(ValueError, match=r'model\.segmentor\.decode_head\.num_classes=4.*'
                                         r'model\.semi_train_cfg\.loss_contrast\.num_classes=5'):
        build(esl_model_cfg(loss_contrast=dict(num_classes=5)))
    model_cfg = esl_model_cfg()
    model_cfg.segmentor.auxiliary_head = dict(
        type='FCNHead', in_channels=32, in_index=2, channels=8, num_convs=1, num_classes=3,
        loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4))
    with pytest.raises(ValueError, match=r'model\.segmentor\.auxiliary_head\.num_classes=3'):
        build(model_cfg)
    assert build(esl_model_cfg(loss_contrast=dict(num_classes=4))).contrast_loss.num_classes == 4


# ------------------------------------------------------------------------------------------ NaN / Inf


def test_non_finite_loss_names_the_term_and_the_iteration():
    model = build(esl_model_cfg())
    MessageHub.get_current_instance().update_info('iter', 6)
    losses = {'decode.loss_ce': torch.tensor(0.7), 'decode.acc_seg': torch.tensor(50.0),
              'unsup.loss_dsl': torch.tensor(float('nan')), 'contrast.loss_ctr': torch.tensor(0.1)}
    with pytest.raises(NonFiniteLossError, match=r'iteration 7 .*unsup\.loss_dsl=nan') as error:
        model.parse_losses(losses)
    assert isinstance(error.value, FloatingPointError) and 'decode.loss_ce' not in str(error.value)
    losses['unsup.loss_dsl'] = torch.tensor(0.2)
    total, log_vars = model.parse_losses(losses)
    assert total.item() == pytest.approx(1.0) and log_vars['unsup.loss_dsl'].item() == pytest.approx(0.2)
    with pytest.raises(NonFiniteLossError, match=r'contrast\.loss_ctr=inf'):
        model.parse_losses(dict(losses, **{'contrast.loss_ctr': torch.tensor(float('inf'))}))


# ------------------------------------------------------------------------- checkpoints of another C/K/q/L


@pytest.mark.parametrize('changed, expected', [
    (dict(num_classes=5), 'C=4'),
    (dict(num_parts=3), 'K=2'),
    (dict(queue_size=16), 'queue_size=8'),
    (dict(embed_channels=16), 'L=8'),
])
def test_checkpoint_of_other_c_k_q_l_is_refused_under_non_strict_loading(changed, expected):
    """mmengine's resume / load_from load with strict=False, which would skip the size-mismatched buffers."""
    state = contrast().state_dict()
    target = contrast(**changed)
    with pytest.raises(ValueError, match='the checkpoint was trained with') as error:
        load_state_dict(target, state, strict=False)
    message = str(error.value)
    assert expected in message and 'this config has' in message and 'without --resume / load_from' in message
    # Same configuration: loads, strict or not.
    load_state_dict(contrast(), state, strict=False)
    contrast().load_state_dict(state, strict=True)


def test_esl_model_refuses_a_checkpoint_of_other_num_parts():
    trained = build(esl_model_cfg())
    other = build(esl_model_cfg(loss_contrast=dict(num_parts=3)))
    with pytest.raises(ValueError, match=r'trained with C=4, K=5.*this config has C=4, K=3'):
        load_state_dict(other, trained.state_dict(), strict=False)
