"""Unsupervised object-part grouping of an ESL checkpoint (paper Fig. 4, Eq. 7).

Every pixel j of class c* gets the part k* = argmax_k cos(E^t(x)_j, P^{c*}_k) (Eq. 7): E^t is the teacher's
encoder output ``teacher.extract_feat(x)[contrast_loss.in_index]``, P the checkpoint's prototypes (K-means on the
labeled set, then Eq. 12), computed by ``PixelPartContrastLoss.assign`` (the cosine map is upsampled to the image,
E^t never is). c* is the ground truth where the image has a label file and the teacher's arg-max otherwise, as
in the paper (labels for x^l, p^t for x^u); ``--class-source`` forces one. Each row shows the image, the part map
(one colour per (class, part): a hue per class, a shade per part; black = no part) and its overlay.

Needs an ESL checkpoint with the pixel-to-part contrast (``semi_train_cfg.loss_contrast.num_parts > 0``) whose
prototypes were initialised (``contrast_loss.prototypes_ready``, set by ``PrototypeInitHook``).

Outputs: the PNG (``--out``), ``<out>.json`` (classes, K, palette, per-row class source and panel boxes) and
``<out>.npz`` (``ids``, ``classes_<i>`` and ``parts_<i>`` maps; parts -1 where none).

Examples:
    python tools/analysis/part_grouping.py configs/esl/esl_effnet-lite0_demo.py \\
        work_dirs/esl_demo/ESL/iter_1000.pth --out work_dirs/analysis/part_grouping.png
    # objects only, parts of the teacher's own classes
    python tools/analysis/part_grouping.py CONFIG CHECKPOINT --classes robot doll car --class-source teacher
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

import numpy as np
import torch

from mmseg_esl.analysis import (
    AnalysisError,
    ImageSource,
    add_common_arguments,
    add_overlay_arguments,
    check_overlay_arguments,
    class_names,
    load_config,
    load_model,
    require_esl,
    run_tool,
    select_classes,
    write_json,
)
from mmseg_esl.visualization.panels import panel_figure, save_png, upscale
from mmseg_esl.visualization.parts import NO_PART_COLOUR, colour_parts, part_palette
from mmseg_esl.visualization.pseudo_labels import auto_scale

TOOL = 'part_grouping.py'
CLASS_SOURCES = ('auto', 'gt', 'teacher')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=TOOL, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, num_images=4, out='work_dirs/analysis/part_grouping.png')
    parser.add_argument('--class-source', choices=CLASS_SOURCES, default='auto',
                        help='class c* of Eq. 7: ground truth where it exists, else the teacher arg-max (auto, '
                        'default), or always one of them')
    parser.add_argument('--classes', nargs='+',
                        help='colour only these classes (names or indices); the other pixels get no part colour')
    add_overlay_arguments(parser, alpha=0.6, what='overlay')
    return parser.parse_args(argv)


def contrast_loss_with_prototypes(model: torch.nn.Module, config: str, checkpoint: str) -> torch.nn.Module:
    """``model.contrast_loss`` if the checkpoint holds part prototypes, else a clear :class:`AnalysisError`."""
    contrast = getattr(model, 'contrast_loss', None)
    if contrast is None:
        raise AnalysisError(
            f'{config} builds an ESLSegmentor without the pixel-to-part contrast (semi_train_cfg.loss_contrast.'
            'num_parts=0, Tab. 4 K = 0): there are no part prototypes to group with. Use a config with num_parts > 0 '
            '(e.g. configs/esl/esl_effnet-lite0_demo.py) and a checkpoint it trained.')
    if not bool(contrast.prototypes_ready):
        raise AnalysisError(
            f'checkpoint {checkpoint} has no part prototypes (contrast_loss.prototypes_ready is False): it was saved '
            "before PrototypeInitHook ran. Train with dict(type='PrototypeInitHook', dataloader=...) in custom_hooks "
            '(as configs/esl/esl_effnet-lite0_demo.py does) and use a checkpoint written after training started.')
    return contrast


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Runs the tool; returns what it wrote into the JSON file."""
    args = parse_args(argv)
    check_overlay_arguments(args)
    cfg = load_config(args.config, args.cfg_options, data_root=args.data_root)
    require_esl(cfg, args.config, TOOL)
    source = ImageSource(cfg, split=args.split, img_dir=args.img_dir, num_images=args.num_images, ids=args.ids)
    model = load_model(cfg, args.config, args.checkpoint, device=args.device)
    contrast = contrast_loss_with_prototypes(model, args.config, args.checkpoint)
    names = class_names(cfg, contrast.num_classes)
    shown = select_classes(names, args.classes)
    palette = part_palette(contrast.num_classes, contrast.num_parts)

    rows, titles, records, maps = [], [], [], {}
    for i, sample in enumerate(source.samples(model)):
        use_gt = sample.gt is not None and args.class_source in ('auto', 'gt')
        if args.class_source == 'gt' and sample.gt is None:
            raise AnalysisError(f'--class-source gt: image {sample.id} has no label file; use --class-source auto')
        with torch.no_grad():
            if use_gt:
                class_map = torch.from_numpy(sample.gt)[None].to(sample.inputs.device)
            else:
                class_map = model.teacher_probs(sample.inputs).argmax(dim=1)
            _, parts = model.teacher_part_maps(sample.inputs, class_map)  # Eq. 7 from E^t
        class_np, part_np = class_map[0].cpu().numpy(), parts[0].cpu().numpy()
        part_np = np.where(np.isin(class_np, shown), part_np, -1)
        part_rgb = colour_parts(class_np, part_np, palette)
        has_part = (part_np >= 0)[..., None]
        overlay = np.where(has_part, np.rint((1 - args.alpha) * sample.image + args.alpha * part_rgb), sample.image)
        scale = args.scale or auto_scale(*sample.image.shape[:2])
        rows.append([upscale(p, scale) for p in (sample.image, part_rgb, overlay.astype(np.uint8))])
        source_name = 'ground truth' if use_gt else 'teacher arg-max'
        titles.append([sample.id, f'parts (classes: {source_name})', 'overlay'])
        maps[f'classes_{i}'] = class_np.astype(np.int16)
        maps[f'parts_{i}'] = part_np.astype(np.int8)
        records.append(dict(id=sample.id, class_source=source_name, scale=scale))

    present = sorted({int(c) for i in range(len(records))
                      for c in np.unique(maps[f'classes_{i}'][maps[f'parts_{i}'] >= 0])})
    legend = [(names[c], palette[c].tolist()) for c in present]
    title = f'Object parts (Eq. 7): nearest of the K = {contrast.num_parts} teacher prototypes of each pixel\'s class'
    fig, boxes = panel_figure(rows, titles=titles, title=title, legend=legend, legend_columns=3)
    size = save_png(fig, args.out)
    stem = osp.splitext(args.out)[0]
    np.savez_compressed(stem + '.npz', ids=np.array(source.ids), **maps)
    for record, box in zip(records, boxes):
        record.update(image_box=box[0], parts_box=box[1], overlay_box=box[2])
    report = dict(tool=TOOL, config=args.config, checkpoint=args.checkpoint, images=source.description,
                  classes=names, shown_classes=shown.tolist(), num_parts=contrast.num_parts, alpha=args.alpha,
                  palette=palette.tolist(), no_part_colour=NO_PART_COLOUR.tolist(), png=dict(path=args.out, **size),
                  rows=records)
    write_json(stem + '.json', report)
    print(f'{TOOL}: {len(records)} images, K = {contrast.num_parts}; wrote {args.out}')
    return report


if __name__ == '__main__':
    sys.exit(run_tool(main, None, TOOL))
