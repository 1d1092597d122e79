"""Test (and evaluate) a segmentor with mmseg-esl (same command line as mmseg's ``tools/test.py``).

Differences from mmseg's script, all additive: ``--launcher pytorch`` also works without CUDA (gloo),
``mmseg_esl`` is imported even if the config forgets ``custom_imports``, and without CUDA SyncBN norm configs
become BN with a warning (``mmseg_esl.utils.convert_sync_bn_cfg``). Before the runner is built, the checkpoint's
tensors are compared with the config's model (``mmseg_esl.utils.check_test_checkpoint``): where mmengine's
non-strict load would only warn and test random weights (e.g. a plain mmseg config given an ESL checkpoint, or
another number of classes), the script stops with the list of mismatched keys and the fix. Keys of parts that
predictions do not use (auxiliary heads, the projector, memory bank and prototypes) may be absent, so an ESL
config still tests a plain mmseg checkpoint.

Examples:
    python tools/test.py CONFIG CHECKPOINT
    python tools/test.py CONFIG CHECKPOINT --show-dir vis --out preds
    tools/dist_test.sh CONFIG CHECKPOINT 8
"""
import argparse
import os

import torch
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

import mmseg_esl  # noqa: F401  (compat fixes and registrations)
from mmseg_esl.utils import check_test_checkpoint, convert_sync_bn_cfg, load_tool_config, setup_cpu_distributed
from mmseg_esl.utils.preflight import exit_on_input_error


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and eval) a segmentor (mmseg-esl)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation metrics (json)')
    parser.add_argument('--out', type=str, help='the dir to save the predictions for offline evaluation')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='dir where painted predictions are saved (under <show-dir>/vis_data/vis_image/); as in mmseg, every '
        'default_hooks.visualization.interval-th image is painted (default 50)')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, e.g. test_dataloader.batch_size=1')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--tta', action='store_true', help='test time augmentation')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def enable_visualization(cfg: Config, args: argparse.Namespace) -> None:
    """Turns on the visualization hook for ``--show`` / ``--show-dir``."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise RuntimeError('--show/--show-dir need a visualization hook in the config: add '
                           "default_hooks.visualization=dict(type='SegVisualizationHook').")
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        cfg.visualizer['save_dir'] = args.show_dir


def main() -> None:
    args = parse_args()
    cfg = load_tool_config(args.config, launcher=args.launcher, cfg_options=args.cfg_options,
                           work_dir=args.work_dir)
    if not torch.cuda.is_available():  # the paper configs use SyncBN, which needs CUDA
        convert_sync_bn_cfg(cfg)
    cfg.load_from = args.checkpoint

    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.tta:
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True

    setup_cpu_distributed(cfg, args.launcher)
    exit_on_input_error(check_test_checkpoint, cfg, args.checkpoint)  # no silent non-strict load
    runner = Runner.from_cfg(cfg)
    runner.test()


if __name__ == '__main__':
    main()
