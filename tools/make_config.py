"""Write an ESL config for your own dataset, then check it against the data (README "Train ESL on your own dataset").

The config inherits one of the shipped ESL configs (--model: the network, optimizer and the method's
hyper-parameters) and sets what depends on your data and machine, each value commented with where it comes from:
classes and palette, folders and suffixes, the split files, num_classes in every head, crop and resize scale,
the batch per GPU, iterations from the unlabeled set size as the paper counts epochs, and the teacher's schedule
(mmseg_esl.utils.own_config). Next to it, sup_<...>.py: the supervised baseline (same network, labeled images
and iterations), to see what the unlabeled images add. Then the pre-flight check of tools/train.py runs on the ESL
config (model, datasets, label values, image sizes; --check off skips it) and the labeled pixels per class are
printed.

Examples:
    # the paper's DeepLabv3+ R101 on 4 GPUs, 80 epochs of the unlabeled set
    python tools/make_config.py --data-root data/my_dataset --classes-file data/my_dataset/classes.txt \\
        --img-dir images --ann-dir masks --seg-map-suffix _mask.png --splits splits --model r101 --gpus 4

    # the CPU demo's small model, 2,000 iterations on one process
    python tools/make_config.py --data-root data/my_dataset --classes background crack --model effnet-lite0 \\
        --crop-size 256 --iters 2000 --out configs/my_dataset/esl_cpu.py
"""
from __future__ import annotations

import argparse
import os.path as osp
import shlex
import sys
from typing import List, Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmseg_esl.utils.own_config import MODELS
    from mmseg_esl.utils.preflight import SCAN_MODES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group('dataset')
    data.add_argument('--data-root', required=True, metavar='ROOT', help='dataset root; the paths below are in it')
    names = data.add_mutually_exclusive_group(required=True)
    names.add_argument('--classes', nargs='+', metavar='NAME', help='class names in the order of the mask values')
    names.add_argument('--classes-file', metavar='FILE', help='a file with one class name per line, in that order')
    data.add_argument('--img-dir', default='images', help="image folder (default: 'images')")
    data.add_argument('--ann-dir', default='masks', help="mask folder (default: 'masks'), index PNGs")
    data.add_argument('--img-suffix', default='.jpg', help="image file ending (default: '.jpg')")
    data.add_argument('--seg-map-suffix', default='.png',
                      help="mask file ending (default: '.png'; '_mask.png' for 0001.jpg -> 0001_mask.png)")
    data.add_argument('--splits', default='splits', metavar='DIR',
                      help="folder with labeled.txt, unlabeled.txt and val.txt (tools/make_splits.py; default: "
                      "'splits')")
    run = parser.add_argument_group('model and run')
    run.add_argument('--model', default='r101', choices=list(MODELS),
                     help='shipped model to build on (default: r101, the paper\'s DeepLabv3+ R101-D8)')
    run.add_argument('--crop-size', type=int, metavar='PX', help='square training crop (default: the model\'s: 513; '
                     'effnet-lite0 96)')
    run.add_argument('--gpus', type=int, help='GPUs (processes) of the run (default: 8; effnet-lite0: 1)')
    run.add_argument('--total-batch', type=int, metavar='B',
                     help='labeled (= unlabeled) images per iteration over all GPUs (default: the paper\'s 8; '
                     'effnet-lite0: 4); learning rates follow by mmengine\'s auto_scale_lr')
    length = run.add_mutually_exclusive_group()
    length.add_argument('--epochs', type=float, help='passes over the unlabeled set (default: 80, the paper\'s VOC)')
    length.add_argument('--iters', type=int, help='iterations, instead of --epochs')
    run.add_argument('--validations', type=int, default=10,
                     help='validations (teacher and student scored) and checkpoints during training (default: 10)')
    parser.add_argument('--out', metavar='FILE', help='config to write (default: configs/<dataset>/esl_<model>_'
                        '<dataset>.py), and its supervised baseline sup_<...>.py next to it; existing files are kept '
                        'unless --force')
    parser.add_argument('--force', action='store_true', help='replace an existing --out')
    parser.add_argument('--check', choices=SCAN_MODES, default='labels',
                        help='pre-flight check of the written config: labels (every mask, image sizes; default), '
                        'full (decode every image too) or off')
    return parser.parse_args(argv)


def _error(message: str) -> None:
    sys.exit(f'make_config.py: error: {message}')


def _class_table(counts, classes) -> List[str]:
    """Lines of labeled pixels per class, with a warning for classes with few or none."""
    import numpy as np
    counts = np.asarray(counts[:len(classes)], dtype=np.int64)
    total = max(1, int(counts.sum()))
    lines = ['labeled training pixels per class:']
    for index, (name, count) in enumerate(zip(classes, counts)):
        share = 100.0 * count / total
        flag = '  <- no labeled pixel: the model cannot learn this class' if count == 0 else (
            '  <- rare: expect a low IoU' if share < 0.1 else '')
        lines.append(f'  {index:3d} {name:<20s} {share:6.2f} %{flag}')
    return lines


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    from mmseg_esl.testing.tiny_voc import voc_palette
    from mmseg_esl.utils.own_config import (
        DatasetSpec,
        default_out,
        plan_config,
        read_classes,
        render_config,
        render_sup_config,
        writable_dir,
    )

    configs_dir = osp.join(REPO, 'configs')
    out = args.out or default_out(args.data_root, args.model, osp.relpath(configs_dir))
    sup_out = osp.join(osp.dirname(out), 'sup_' + osp.basename(out).removeprefix('esl_'))
    for path in (out, sup_out):
        if osp.exists(path) and not args.force:
            _error(f'{path} exists; pass --force to replace it, or --out another file.')
    try:
        classes, source = read_classes(args.classes, args.classes_file)
        spec = DatasetSpec(data_root=args.data_root, classes=classes, img_dir=args.img_dir, ann_dir=args.ann_dir,
                           img_suffix=args.img_suffix, seg_map_suffix=args.seg_map_suffix,
                           labeled=osp.join(args.splits, 'labeled.txt'),
                           unlabeled=osp.join(args.splits, 'unlabeled.txt'), val=osp.join(args.splits, 'val.txt'),
                           classes_source=source)
        plan = plan_config(spec, model=args.model, out=out, configs_dir=configs_dir, crop_size=args.crop_size,
                           gpus=args.gpus, total_batch=args.total_batch, epochs=args.epochs, iters=args.iters,
                           validations=args.validations)
    except (ValueError, FileNotFoundError) as e:
        _error(str(e))
    plan.command = 'python tools/make_config.py ' + ' '.join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    writable_dir(out)
    with open(out, 'w') as f:
        f.write(render_config(plan, voc_palette(len(classes))))
    with open(sup_out, 'w') as f:
        f.write(render_sup_config(plan, osp.basename(out)))
    total = plan.per_gpu * plan.gpus
    print(f'wrote {out}: {args.model} on {len(classes)} classes; {plan.num_labeled} labeled, {plan.num_unlabeled} '
          f'unlabeled, {plan.num_val} validation images; {total} + {total} images per iteration on {plan.gpus} '
          f'process(es); {plan.max_iters} iterations ({plan.iters_per_epoch} per epoch), validation every '
          f'{plan.val_interval}; teacher: {plan.teacher_iters} supervised-only + {plan.teacher_iters} copy '
          f'iterations, then EMA.\nwrote {sup_out}: its supervised baseline (labeled images only, same '
          'iterations).')
    for note in plan.notes:
        print(f'note: {note}')

    if args.check != 'off':
        import torch

        import mmseg_esl  # noqa: F401  (registrations)
        from mmseg_esl.utils import convert_sync_bn_cfg, load_tool_config
        from mmseg_esl.utils.preflight import ESLInputError, check_training_inputs
        cfg = load_tool_config(out, launcher='none')
        cfg.work_dir = None  # the check writes nothing
        if not torch.cuda.is_available():
            convert_sync_bn_cfg(cfg)
        try:
            report = check_training_inputs(cfg, scan=args.check)  # refuses 0/255 binary masks, among others
        except ESLInputError as e:
            problem = (str(e).replace(' Nothing was written.', '')
                       .replace('Nothing was written; --data-check off', '--check off'))
            _error(f'the config {out} was written, but it does not fit the data:\n{problem}\nThe config has '
                   f'{len(classes)} classes (from {source}): masks must hold the values 0 ... {len(classes) - 1} '
                   'and 255 (ignored). Fix the data or the arguments and run make_config.py again with --force.')
        print(f'checked: {report.total_images} images and {report.total_labels} masks read without a problem.')
        print('\n'.join(_class_table(report.class_pixels, classes)))
    train = (f'python tools/train.py {out}' if plan.gpus == 1 else f'tools/dist_train.sh {out} {plan.gpus}')
    work_dir = osp.join('work_dirs', osp.splitext(osp.basename(out))[0])
    sup_train = train.replace(out, sup_out)
    print(f'next:\n  {train}\n  python tools/test.py {out} {work_dir}/iter_{plan.max_iters}.pth\n'
          f'  {sup_train}    # the supervised baseline, to compare')

if __name__ == '__main__':
    main()
