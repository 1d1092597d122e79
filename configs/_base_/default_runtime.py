# mmsegmentation 1.2.2's configs/_base_/default_runtime.py, copied (Apache-2.0, OpenMMLab) so that no
# config here needs the `mmseg::` scope: the OneDL fork's mmengine resolves that scope to the upstream distribution
# name and fails before mmseg_esl is imported (README "Which OpenMMLab stack"). The `_scope_='mmseg'` keys are what
# loading it through `mmseg::` adds: the merged configs (and ssl_gain.py's config digests) stay identical.
default_scope = 'mmseg'
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(_scope_='mmseg', type='LocalVisBackend')]
visualizer = dict(
    _scope_='mmseg', type='SegLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')], name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False

tta_model = dict(_scope_='mmseg', type='SegTTAModel')
