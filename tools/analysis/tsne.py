"""t-SNE of pixel embeddings, coloured by class and by object part, for one or two checkpoints (paper Fig. 6).

For each checkpoint, pixels of the chosen images are embedded by the projector P of the teacher (or student,
``--network``): z = P(decoder features), the space the pixel-to-part contrast (Eq. 10) shapes. A checkpoint
without a projector (ESL with K = 0, e.g. ``configs/esl/mt-dsl_effnet-lite0_demo.py``) falls back to the decode
head's classifier-input features, the ones a projector would read (``DecodeFeatureTap``), and the panel title
says so. Pixels are taken at the feature map's resolution with their class (ground truth nearest-downsampled
where a label file exists, else the teacher's arg-max, as ESL's contrastive step does), sampled stratified per
class up to ``--max-points``, L2-normalised (the loss compares cosines) and embedded with
``sklearn.manifold.TSNE``. Top row: coloured by class; bottom row: by part (Eq. 7, ``PixelPartContrastLoss.assign``
with the checkpoint's prototypes; only when it has them). With ``--seed`` and ground truth, both checkpoints
embed the same pixels.

Outputs: the PNG (``--out``), ``<out>.json`` (per checkpoint: feature source, points per class, panel boxes and
axis limits in the PNG) and ``<out>.npz`` (per checkpoint m: ``embedding_m``, ``classes_m``, ``parts_m``,
``pixels_m`` = (image index, y, x) at feature resolution, ``features_m`` with ``--save-features``).

Examples:
    # ESL vs the same model trained without the contrastive term (Fig. 6 (b) vs (a))
    python tools/analysis/tsne.py \\
        --configs configs/esl/esl_effnet-lite0_demo.py configs/esl/mt-dsl_effnet-lite0_demo.py \\
        --checkpoints work_dirs/esl_demo/ESL/iter_1000.pth work_dirs/ssl_gain/MT-DSL_seed0/iter_1000.pth \\
        --labels ESL "w/o contrast" --out work_dirs/analysis/tsne.png
    # one checkpoint, 4 classes as in the paper's figure
    python tools/analysis/tsne.py --configs CONFIG --checkpoints CKPT --classes robot doll car truck
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mmseg_esl.analysis import (
    AnalysisError,
    ImageSource,
    add_common_arguments,
    class_names,
    load_config,
    load_model,
    require_esl,
    run_tool,
    select_classes,
    write_json,
)
from mmseg_esl.models.decode_heads.projector_head import DecodeFeatureTap
from mmseg_esl.visualization.panels import new_figure, save_png
from mmseg_esl.visualization.parts import class_palette, part_palette

TOOL = 'tsne.py'
PANEL = 360  # side of one scatter panel in pixels
IGNORE = 255


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=TOOL, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--configs', nargs='+', required=True,
                        help='config of each checkpoint (one config is used for all checkpoints)')
    parser.add_argument('--checkpoints', nargs='+', required=True, help='one or two checkpoints')
    parser.add_argument('--labels', nargs='+', help='panel label of each checkpoint (default: file names)')
    add_common_arguments(parser, num_images=20, out='work_dirs/analysis/tsne.png', single_model=False)
    parser.add_argument('--network', choices=('teacher', 'student'), default='teacher',
                        help='whose projector (or decoder) features to embed (default: teacher)')
    parser.add_argument('--max-points', type=int, default=2000,
                        help='pixels per checkpoint, split evenly over the classes present (default: 2000)')
    parser.add_argument('--classes', nargs='+', help='only these classes (names or indices)')
    parser.add_argument('--perplexity', type=float, default=30.0, help='t-SNE perplexity (default: 30)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the pixel sampling and of t-SNE (default: 0)')
    parser.add_argument('--save-features', action='store_true', help='also store the sampled features in the NPZ')
    return parser.parse_args(argv)


@dataclass
class Points:
    """Sampled pixels of one checkpoint: features (N, L), classes (N,), parts (N,) or None, pixels (N, 3)."""

    features: np.ndarray
    classes: np.ndarray
    parts: Optional[np.ndarray]
    pixels: np.ndarray
    source: str


def stratified_quota(available: Dict[int, int], total: int) -> Dict[int, int]:
    """Splits ``total`` points evenly over classes; a class with fewer pixels gives its share to the others.

    Args:
        available: Pixels available per class.
        total: Points wanted.

    Returns:
        Points per class, each <= its availability, summing to ``min(total, sum(available))``.
    """
    quota, left = {}, total
    ordered = sorted(available, key=lambda c: available[c])
    for i, c in enumerate(ordered):
        share = left // (len(ordered) - i)
        quota[c] = min(available[c], share)
        left -= quota[c]
    # Integer division may leave a remainder: hand it to the classes with pixels to spare.
    for c in sorted(available, key=lambda c: -available[c]):
        extra = min(left, available[c] - quota[c])
        quota[c] += extra
        left -= extra
    return quota


def collect_points(model: torch.nn.Module, source: ImageSource, *, network: str, shown: np.ndarray,
                   max_points: int, seed: int) -> Points:
    """Embeds every image, keeps up to ``max_points`` random pixels per class and image, then stratifies.

    Args:
        model: The ESL model (eval mode).
        source: The images.
        network: ``'teacher'`` or ``'student'``: whose projector z (or decoder features, without projector).
        shown: Class indices to sample.
        max_points: Pixels in total (:func:`stratified_quota` over the classes found).
        seed: Seed of the sampling.

    Returns:
        :class:`Points`; ``features`` (N, L) are z (N, L) of the pixels at the feature map's resolution (h, w),
        ``pixels`` their (image index, y, x), ``parts`` their Eq. 7 part (None without prototypes).
    """
    net = getattr(model, network)
    projector = getattr(net, 'projector', None)
    contrast = getattr(model, 'contrast_loss', None)
    with_parts = contrast is not None and bool(contrast.prototypes_ready)
    tap = DecodeFeatureTap(net.decode_head)
    generator = torch.Generator().manual_seed(seed)
    feats, classes, parts, pixels = [], [], [], []
    try:
        for index, sample in enumerate(source.samples(model)):
            with torch.no_grad():
                net.decode_head.forward(net.extract_feat(sample.inputs))
                z = tap.pop()
                if projector is not None:
                    z = projector(z)  # (1, L, h, w)
                size = z.shape[2:]
                if sample.gt is not None:
                    label = torch.from_numpy(sample.gt)[None, None].float()
                else:
                    label = model.teacher_probs(sample.inputs).argmax(dim=1, keepdim=True).float().cpu()
                class_map = F.interpolate(label, size=size, mode='nearest')[0].long()  # (1, h, w)
                if with_parts:
                    part_map = model.teacher_part_maps(sample.inputs, class_map)[1][0].cpu()  # Eq. 7
            flat_classes = class_map.reshape(-1)
            flat_z = z[0].flatten(1).t().cpu()  # (h·w, L)
            for c in shown.tolist():
                idx = (flat_classes == c).nonzero()[:, 0]
                if idx.numel() > max_points:
                    idx = idx[torch.randperm(idx.numel(), generator=generator)[:max_points]]
                if idx.numel() == 0:
                    continue
                feats.append(flat_z[idx].float().numpy())
                classes.append(np.full(idx.numel(), c))
                if with_parts:
                    parts.append(part_map.reshape(-1)[idx].numpy())
                ys, xs = idx // size[1], idx % size[1]
                pixels.append(np.stack([np.full(idx.numel(), index), ys.numpy(), xs.numpy()], axis=1))
    finally:
        tap.remove()
    if not feats:
        raise AnalysisError(f'none of the selected classes occurs in the {len(source)} images; choose other '
                            '--classes or more images (--num-images)')
    features, all_classes = np.concatenate(feats), np.concatenate(classes)
    all_parts = np.concatenate(parts) if with_parts else None
    all_pixels = np.concatenate(pixels)
    quota = stratified_quota({int(c): int((all_classes == c).sum()) for c in np.unique(all_classes)}, max_points)
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.permutation(np.flatnonzero(all_classes == c))[:n] for c, n in quota.items()])
    keep = rng.permutation(keep)  # drawing order: no class painted on top of all others
    if projector is not None:
        source_name = f'{network} projector z ({features.shape[1]}-d)'
    else:
        source_name = f'{network} decoder features ({features.shape[1]}-d; no projector, K = 0)'
    return Points(features=features[keep], classes=all_classes[keep],
                  parts=None if all_parts is None else all_parts[keep], pixels=all_pixels[keep], source=source_name)


def embed(features: np.ndarray, *, perplexity: float, seed: int) -> np.ndarray:
    """t-SNE (sklearn) of L2-normalised features: (N, L) -> (N, 2)."""
    from sklearn.manifold import TSNE
    if len(features) < 5:
        raise AnalysisError(f'only {len(features)} pixels to embed; use more images or a larger --max-points')
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    tsne = TSNE(n_components=2, perplexity=min(perplexity, (len(unit) - 1) / 3), init='pca', learning_rate='auto',
                random_state=seed)
    return tsne.fit_transform(unit.astype(np.float32))


def draw(results: List[dict], names: Sequence[str], num_classes: int, num_parts: int):
    """2 rows (by class, by part) × one column per checkpoint; returns the figure and each panel's axes."""
    cols = len(results)
    width = cols * (PANEL + 20) + 20
    legend_h = 22 * (1 + (len(names) - 1) // max(1, (width - 20) // 105))
    height = 2 * (PANEL + 40) + 30 + legend_h
    fig = new_figure(width, height)
    colours = class_palette(num_classes) / 255
    shades = part_palette(num_classes, max(num_parts, 1)) / 255
    axes = []
    for m, result in enumerate(results):
        pair = []
        for row in range(2):
            left = (20 + m * (PANEL + 20)) / width
            bottom = 1 - (30 + (row + 1) * (PANEL + 40) - 10) / height
            ax = fig.add_axes((left, bottom, PANEL / width, PANEL / height))
            ax.set_xticks([])
            ax.set_yticks([])
            emb, cls, parts = result['embedding'], result['classes'], result['parts']
            if row == 0:
                ax.scatter(emb[:, 0], emb[:, 1], s=6, c=colours[cls], linewidths=0)
                ax.set_title(f'{result["label"]}: by class\n{result["source"]}', fontsize=8)
            elif parts is not None:
                ax.scatter(emb[:, 0], emb[:, 1], s=6, c=shades[cls, parts], linewidths=0)
                ax.set_title(f'{result["label"]}: by part (Eq. 7, K = {num_parts})', fontsize=8)
            else:
                ax.text(0.5, 0.5, 'no part prototypes in this checkpoint:\nparts (Eq. 7) unavailable',
                        ha='center', va='center', fontsize=8, transform=ax.transAxes)
                ax.set_title(f'{result["label"]}: by part', fontsize=8)
            pair.append(ax)
        axes.append(pair)
    fig.text(0.5, 1 - 12 / height, 't-SNE of pixel embeddings (Fig. 6)', ha='center', va='center', fontsize=10)
    from matplotlib.patches import Patch
    handles = [Patch(color=colours[c], label=name) for c, name in enumerate(names)]
    fig.legend(handles=handles, loc='lower center', ncol=max(1, min(len(handles), (width - 20) // 105)),
               frameon=False, fontsize=8)
    return fig, axes


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Runs the tool; returns what it wrote into the JSON file."""
    args = parse_args(argv)
    if not 1 <= len(args.checkpoints) <= 2:
        raise AnalysisError(f'--checkpoints takes one or two checkpoints, got {len(args.checkpoints)}')
    if len(args.configs) not in (1, len(args.checkpoints)):
        raise AnalysisError(f'--configs: give one config, or one per checkpoint ({len(args.checkpoints)}), got '
                            f'{len(args.configs)}')
    labels = args.labels or [osp.basename(osp.dirname(c)) or osp.basename(c) for c in args.checkpoints]
    if len(labels) != len(args.checkpoints):
        raise AnalysisError(f'--labels: one label per checkpoint ({len(args.checkpoints)}), got {len(labels)}')
    if args.max_points < 5:
        raise AnalysisError(f'--max-points must be >= 5, got {args.max_points}')
    configs = args.configs * len(args.checkpoints) if len(args.configs) == 1 else args.configs

    results, names, num_classes, num_parts = [], None, None, 0
    for config, checkpoint, label in zip(configs, args.checkpoints, labels):
        cfg = load_config(config, args.cfg_options, data_root=args.data_root)
        require_esl(cfg, config, TOOL)
        source = ImageSource(cfg, split=args.split, img_dir=args.img_dir, num_images=args.num_images, ids=args.ids)
        model = load_model(cfg, config, checkpoint, device=args.device)
        classes_here = model.teacher.decode_head.num_classes
        if num_classes is not None and classes_here != num_classes:
            raise AnalysisError(f'the checkpoints predict different numbers of classes ({num_classes} vs '
                                f'{classes_here}); compare models of the same dataset')
        num_classes = classes_here
        names = class_names(cfg, num_classes)
        shown = select_classes(names, args.classes)
        points = collect_points(model, source, network=args.network, shown=shown, max_points=args.max_points,
                                seed=args.seed)
        if points.parts is not None:
            num_parts = max(num_parts, model.contrast_loss.num_parts)
        embedding = embed(points.features, perplexity=args.perplexity, seed=args.seed)
        results.append(dict(label=label, config=config, checkpoint=checkpoint, source=points.source,
                            embedding=embedding, classes=points.classes, parts=points.parts, pixels=points.pixels,
                            features=points.features, images=source.description))
        print(f'{TOOL}: {label}: {len(points.classes)} pixels of {len(source)} images, {points.source}')

    fig, axes = draw(results, names, num_classes, num_parts)
    size = save_png(fig, args.out)
    stem = osp.splitext(args.out)[0]
    arrays = {}
    panels = []
    for m, (result, pair) in enumerate(zip(results, axes)):
        arrays.update({f'embedding_{m}': result['embedding'], f'classes_{m}': result['classes'],
                       f'pixels_{m}': result['pixels']})
        if result['parts'] is not None:
            arrays[f'parts_{m}'] = result['parts']
        if args.save_features:
            arrays[f'features_{m}'] = result['features']
        boxes = []
        for ax in pair:
            bbox = ax.get_window_extent()
            boxes.append(dict(box=[int(round(bbox.x0)), int(round(size['height'] - bbox.y1)), int(round(bbox.x1)),
                                   int(round(size['height'] - bbox.y0))],
                              xlim=list(ax.get_xlim()), ylim=list(ax.get_ylim()), title=ax.get_title()))
        counts = np.bincount(result['classes'], minlength=num_classes)
        panels.append(dict(label=result['label'], config=result['config'], checkpoint=result['checkpoint'],
                           images=result['images'], feature_source=result['source'],
                           num_points=int(len(result['classes'])),
                           points_per_class={names[c]: int(n) for c, n in enumerate(counts) if n},
                           has_parts=result['parts'] is not None, class_panel=boxes[0], part_panel=boxes[1]))
    np.savez_compressed(stem + '.npz', **arrays)
    report = dict(tool=TOOL, network=args.network, max_points=args.max_points, seed=args.seed, classes=names,
                  class_colours=class_palette(num_classes).tolist(),
                  part_colours=part_palette(num_classes, max(num_parts, 1)).tolist(), num_parts=num_parts,
                  png=dict(path=args.out, **size), checkpoints=panels)
    write_json(stem + '.json', report)
    print(f'{TOOL}: wrote {args.out}')
    return report


if __name__ == '__main__':
    sys.exit(run_tool(main, None, TOOL))
