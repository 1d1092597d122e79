"""Train a segmentor with mmseg-esl (same command line as mmseg's ``tools/train.py``).

Differences from mmseg's script, all additive:
  * ``--resume`` optionally takes a checkpoint path (bare ``--resume`` resumes from the work dir's latest);
  * ``--launcher pytorch`` also works on machines without CUDA (gloo), see ``mmseg_esl.utils.launch``;
  * ``mmseg_esl`` is imported even if the config forgets ``custom_imports``;
  * ``--resume`` reuses the checkpoint's seed before the data loaders are built, so the data order continues;
    a bare ``--resume`` continues from the checkpoint ``last_checkpoint`` names *in this work dir* (a moved or
    copied work dir resumes from its own files), and an unreadable checkpoint gives one clear error;
  * without CUDA, SyncBN norm configs become BN with a warning (``mmseg_esl.utils.convert_sync_bn_cfg``), so
    the paper configs run in a CPU smoke test.
  * before the runner exists (so a refused run writes nothing), a pre-flight check of the model config, the
    datasets, every image and label map, and the checkpoint to resume / load, with one clear error listing the
    problems (``mmseg_esl.utils.preflight``); ``--data-check labels|off`` makes the file scan cheaper / skips it.

Examples:
    python tools/train.py configs/esl/esl_r101_voc_1-8.py
    python tools/train.py CONFIG --work-dir work_dirs/run1 --resume
    tools/dist_train.sh CONFIG 8 --amp
"""
import argparse
import os

import torch
from mmengine.config import DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

import mmseg_esl  # noqa: F401  (compat fixes and registrations)
from mmseg_esl.utils import convert_sync_bn_cfg, load_tool_config, setup_cpu_distributed
from mmseg_esl.utils.preflight import SCAN_MODES, check_training_inputs, exit_on_input_error
from mmseg_esl.utils.resume import resolve_resume, use_checkpoint_seed


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a segmentor (mmseg-esl)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto', default=None,
        help='resume from the latest checkpoint in the work dir, or from the given checkpoint path')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic mixed precision training (AmpOptimWrapper)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, e.g. train_cfg.max_iters=100 key="[a,b]"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument(
        '--data-check', choices=SCAN_MODES, default='full',
        help='pre-flight scan of the data files before training: full (decode every image and label map, '
        'default), labels (label maps and image sizes only) or off (config, datasets and checkpoint only)')
    parser.add_argument(
        '--allow-missing-classes', action='store_true',
        help='accept a class without any labeled training pixel while more than a quarter of the labeled pixels are '
        'the ignore index, or the masks hold only 0 and it (refused by default: the signature of binary masks saved '
        'as 0/255)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    cfg = load_tool_config(args.config, launcher=args.launcher, cfg_options=args.cfg_options,
                           work_dir=args.work_dir)
    if not torch.cuda.is_available():  # the paper configs use SyncBN, which needs CUDA
        convert_sync_bn_cfg(cfg)

    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper == 'AmpOptimWrapper':
            print_log('AMP training is already enabled in your config.', logger='current')
        else:
            assert optim_wrapper == 'OptimWrapper', (
                f'--amp is only supported with optim_wrapper.type OptimWrapper, but got {optim_wrapper}.')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    exit_on_input_error(resolve_resume, cfg)  # the file a bare --resume continues from: in this work dir
    use_checkpoint_seed(cfg)  # a resumed run replays the data order it trained on (mmseg_esl.utils.resume)
    setup_cpu_distributed(cfg, args.launcher)
    exit_on_input_error(check_training_inputs, cfg, scan=args.data_check,
                        allow_missing_classes=args.allow_missing_classes)  # bad input: one error, nothing written
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
