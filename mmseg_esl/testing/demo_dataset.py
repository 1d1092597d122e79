"""A synthetic but hard semi-supervised segmentation dataset for the README demo (VOC layout, no downloads).

The demo trains a supervised baseline, a mean teacher and ESL on a 2-core CPU in a few minutes each. For
semi-supervised learning to be able to help, the data must be hard for a model trained on a few dozen
labeled images, yet learnable: every class is defined without ambiguity by its *configuration of parts*.
The design below was fixed before any model was trained on it and is not tuned to make any method win.

Layout (as :func:`mmseg_esl.testing.make_tiny_voc`, readable by mmseg's ``BaseSegDataset``)::

    root/
      JPEGImages/<id>.jpg                 RGB, image_size x image_size, JPEG quality 90
      SegmentationClass/<id>.png          palette ("P" mode, VOC palette) PNGs, class index per pixel
      ImageSets/Segmentation/dev.txt      the first ``num_dev`` training ids, held out of training: the split on
                                          which hyper-parameters are chosen (never the validation set)
      ImageSets/Segmentation/labeled.txt  the next ``num_labeled`` training ids
      ImageSets/Segmentation/unlabeled.txt  the other training ids (their PNGs are written too, to measure
                                          pseudo-label accuracy; they must never feed a training loss)
      ImageSets/Segmentation/train.txt    labeled + unlabeled (the "Full" upper bound trains on all of them)
      ImageSets/Segmentation/val.txt      separate validation images

Labels are exact geometry: 0 = background, 1..6 = object classes. No ignore pixels (255) are written: the
ambiguous pixels (anti-aliased, blurred object borders, shared parts) are exactly what the demo is about.

**Classes** (:data:`DEMO_CLASSES`, palette :data:`DEMO_PALETTE` = the first 7 VOC colours). Each object is
drawn upright on a 64 x 64 canvas as 3-4 parts, listed here in drawing order (later parts cover earlier ones)
with their *appearance* (texture + colours, table :data:`DEMO_PART_APPEARANCES`)::

    robot   legs: dark_leg      torso: blue_panel   head: metal         visor: glass
    doll    legs: dark_leg      dress: red_dots     head: skin
    car     window: glass       body: orange_paint  wheels: tyre
    truck   cargo: wood         cab: yellow_paint   window: glass       wheels: tyre
    tree    trunk: bark         crown: leaf         fruit: red_fruit
    flower  stem: stem          leaves: leaf        petals: petal       centre: pollen

**Shared appearances** (identical texture and colour distribution in every class that uses them), so their
pixels are genuinely ambiguous and the class is only recoverable from the other parts of the object:
``dark_leg`` (robot, doll), ``tyre`` (car, truck), ``glass`` (robot, car, truck), ``leaf`` (tree, flower).
Within one class all appearances are distinct (see :func:`shared_part_appearances`).

**Random distributions** (every image independently; ``U`` = uniform):

* per part instance: both colours + N(0, 10) per channel, pattern period x U(0.8, 1.25); per shape a
  shift of U(-1.5, 1.5) canvas px and a size factor U(0.9, 1.1);
* per object: class uniform over the 6 (repeats allowed), size (canvas side in the image) log-uniform in
  [0.25, 0.7] x image_size, aspect x U(0.85, 1.15), horizontal flip with p = 0.5, rotation U(-40, 40) deg,
  centre U(0.1, 0.9) x image_size (objects may be cut by the image border);
* objects per image: 1, 2, 3, 4 with p = 0.2, 0.35, 0.3, 0.15, drawn in order: later objects occlude
  earlier ones and the label map follows the occlusion;
* background (class 0): a low-frequency colour field (3-8 cells per side, random colours) blended with a
  random linear gradient, with p = 0.4 oriented stripes; then U{3..7} distractor shapes (polygons, ellipses,
  rectangles, thick lines, radius U(4, 0.2 x image_size) px) with random colours and one of the part
  textures; then Binomial(2, 0.25) *loose parts*: one part with a shared appearance (uniform over the 9
  such parts of the table above, e.g. the car's wheels), drawn like an object part but labelled background,
  since a lone wheel is not a car. After the objects, with p = 0.3, one thin pole
  (2-4 px line) occludes whatever it crosses and is labelled background;
* image only: brightness x U(0.85, 1.15) + U(-15, 15), Gaussian blur with p = 0.5 (sigma U(0.5, 1.2)),
  Gaussian noise (sigma U(2, 8)), JPEG quality 90.

Every image has its own generator seeded with ``(seed, split, index)``, so the files are bit-identical for a
given seed, the validation images do not depend on the other counts, and the dev images (training indices
``0 .. num_dev - 1``) not on ``num_labeled`` or ``num_unlabeled``.
"""
from __future__ import annotations

import math
import os
import os.path as osp
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from .demo_drawing import TEXTURES, Shape, disc, draw_shape, jitter_shape, jittered_colour, part_texture, rect
from .tiny_voc import voc_palette

#: Class names of the demo dataset; index = label value.
DEMO_CLASSES: Tuple[str, ...] = ('background', 'robot', 'doll', 'car', 'truck', 'tree', 'flower')
#: Palette of the demo classes (the first VOC colours), as mmseg's ``metainfo['palette']``.
DEMO_PALETTE: List[List[int]] = voc_palette(len(DEMO_CLASSES))

_CANVAS = 64  # side of the canvas an object is drawn on before it is scaled, rotated and placed



@dataclass(frozen=True)
class PartAppearance:
    """How one kind of object part looks.

    Attributes:
        texture: One of ``plain``, ``hstripes``, ``vstripes``, ``checker``, ``dots``, ``rings`` (around the
            shape's centre), ``speckle`` (random blobs of ``colour2``), ``gradient`` (vertical, over the shape).
        colour: Main RGB colour.
        colour2: Second RGB colour of the pattern (unused by ``plain``).
        period: Pattern scale in canvas pixels (stripe / checker / dot / ring period, blob size, gradient
            length).
    """

    texture: str
    colour: Tuple[int, int, int]
    colour2: Tuple[int, int, int]
    period: float


#: Every part appearance; a name used by several classes is a shared (ambiguous) part.
DEMO_PART_APPEARANCES: Dict[str, PartAppearance] = {
    'dark_leg': PartAppearance('plain', (60, 50, 70), (60, 50, 70), 0.0),
    'metal': PartAppearance('checker', (165, 165, 175), (115, 115, 125), 4.0),
    'blue_panel': PartAppearance('vstripes', (40, 70, 190), (85, 125, 235), 6.0),
    'glass': PartAppearance('gradient', (190, 232, 250), (80, 140, 200), 14.0),
    'skin': PartAppearance('plain', (235, 185, 150), (235, 185, 150), 0.0),
    'red_dots': PartAppearance('dots', (200, 40, 50), (250, 225, 225), 6.0),
    'orange_paint': PartAppearance('hstripes', (240, 135, 30), (195, 90, 20), 6.0),
    'tyre': PartAppearance('rings', (25, 25, 25), (130, 130, 130), 5.0),
    'wood': PartAppearance('vstripes', (155, 100, 50), (110, 68, 32), 4.0),
    'yellow_paint': PartAppearance('plain', (235, 210, 40), (235, 210, 40), 0.0),
    'bark': PartAppearance('speckle', (95, 60, 35), (55, 35, 20), 2.0),
    'leaf': PartAppearance('speckle', (45, 145, 55), (110, 205, 85), 2.5),
    'red_fruit': PartAppearance('plain', (215, 35, 45), (215, 35, 45), 0.0),
    'stem': PartAppearance('plain', (100, 165, 40), (100, 165, 40), 0.0),
    'petal': PartAppearance('plain', (220, 85, 205), (220, 85, 205), 0.0),
    'pollen': PartAppearance('dots', (245, 205, 40), (150, 95, 20), 3.0),
}
_APPEARANCE_NAMES: Tuple[str, ...] = tuple(DEMO_PART_APPEARANCES)

@dataclass(frozen=True)
class ObjectPart:
    """One part of an object class: its role, its appearance and its shapes on the 64 x 64 canvas."""

    role: str
    appearance: str
    shapes: Tuple[Shape, ...]


_PETALS = tuple(('ellipse', (32 + 10 * math.cos(math.radians(a)), 18 + 10 * math.sin(math.radians(a)), 8.0, 4.5,
                             float(a))) for a in range(0, 360, 60))

#: The parts of each object class, in drawing order (later parts cover earlier ones).
DEMO_CLASS_PARTS: Dict[str, Tuple[ObjectPart, ...]] = {
    'robot': (ObjectPart('legs', 'dark_leg', (rect(20, 44, 28, 62), rect(36, 44, 44, 62))),
              ObjectPart('torso', 'blue_panel', (rect(15, 19, 49, 46),)),
              ObjectPart('head', 'metal', (rect(21, 3, 43, 19),)),
              ObjectPart('visor', 'glass', (rect(25, 8, 39, 14),))),
    'doll': (ObjectPart('legs', 'dark_leg', (rect(25, 46, 30, 62), rect(34, 46, 39, 62))),
             ObjectPart('dress', 'red_dots', (('poly', ((32, 19), (13, 50), (51, 50))),)),
             ObjectPart('head', 'skin', (disc(32, 12, 9),))),
    'car': (ObjectPart('window', 'glass', (('poly', ((17, 28), (23, 13), (43, 13), (51, 28))),)),
            ObjectPart('body', 'orange_paint', (('poly', ((3, 30), (8, 26), (58, 26), (62, 32), (62, 46),
                                                          (3, 46))),)),
            ObjectPart('wheels', 'tyre', (disc(16, 46, 9), disc(48, 46, 9)))),
    'truck': (ObjectPart('cargo', 'wood', (rect(2, 8, 40, 46),)),
              ObjectPart('cab', 'yellow_paint', (('poly', ((41, 18), (54, 18), (62, 30), (62, 46), (41, 46))),)),
              ObjectPart('window', 'glass', (('poly', ((45, 21), (53, 21), (58, 30), (45, 30))),)),
              ObjectPart('wheels', 'tyre', (disc(13, 47, 8), disc(29, 47, 8), disc(52, 47, 8)))),
    'tree': (ObjectPart('trunk', 'bark', (rect(27, 34, 37, 63),)),
             ObjectPart('crown', 'leaf', (('ellipse', (32, 22, 25, 19, 0.0)),)),
             ObjectPart('fruit', 'red_fruit', tuple(disc(x, y, 3.5) for x, y in
                                                    ((22, 18), (40, 14), (34, 28), (44, 26), (24, 30))))),
    'flower': (ObjectPart('stem', 'stem', (rect(30, 24, 34, 63),)),
               ObjectPart('leaves', 'leaf', (('ellipse', (22, 46, 10, 4, -30.0)),
                                             ('ellipse', (42, 52, 10, 4, 30.0)))),
               ObjectPart('petals', 'petal', _PETALS),
               ObjectPart('centre', 'pollen', (disc(32, 18, 6),))),
}


def shared_part_appearances() -> Dict[str, Tuple[str, ...]]:
    """Returns ``{appearance: classes}`` for every part appearance used by two or more object classes."""
    users: Dict[str, List[str]] = {}
    for cls, parts in DEMO_CLASS_PARTS.items():
        for appearance in dict.fromkeys(part.appearance for part in parts):
            users.setdefault(appearance, []).append(cls)
    return {name: tuple(classes) for name, classes in users.items() if len(classes) > 1}


#: Parts that may lie alone on the background (labelled background): every part with a shared appearance.
_LOOSE_PARTS: Tuple[ObjectPart, ...] = tuple(part for parts in DEMO_CLASS_PARTS.values() for part in parts
                                             if part.appearance in shared_part_appearances())


def _draw_parts(parts: Sequence[ObjectPart], rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Draws ``parts`` on a fresh canvas: ``(rgb (C, C, 3) float32, part ids (C, C) uint8)``.

    Part ids are ``1 + index`` into :data:`DEMO_PART_APPEARANCES` (0 = empty canvas).
    """
    rgb = np.zeros((_CANVAS, _CANVAS, 3), np.float32)
    ids = np.zeros((_CANVAS, _CANVAS), np.uint8)
    for part in parts:
        look = DEMO_PART_APPEARANCES[part.appearance]
        colour, colour2 = jittered_colour(look.colour, rng), jittered_colour(look.colour2, rng)
        period = look.period * rng.uniform(0.8, 1.25)
        value = 1 + _APPEARANCE_NAMES.index(part.appearance)
        for shape in part.shapes:
            mask = np.zeros((_CANVAS, _CANVAS), np.uint8)
            centre = draw_shape(mask, jitter_shape(shape, rng), 1)
            inside = mask.astype(bool)
            rgb[inside] = part_texture(look.texture, colour, colour2, period, _CANVAS, _CANVAS, rng,
                                       centre=centre)[inside]
            ids[inside] = value
    return rgb, ids


def _placement(image_size: int, rng: np.random.Generator) -> np.ndarray:
    """A random 2 x 3 affine matrix from the canvas to the image (size, aspect, flip, rotation, centre)."""
    side = image_size * math.exp(rng.uniform(math.log(0.25), math.log(0.7)))
    scale = side / _CANVAS
    aspect = rng.uniform(0.85, 1.15)
    flip = -1.0 if rng.random() < 0.5 else 1.0
    angle = math.radians(rng.uniform(-40.0, 40.0))
    cx, cy = rng.uniform(0.1, 0.9, size=2) * image_size
    cos, sin = math.cos(angle), math.sin(angle)
    linear = np.array([[cos, -sin], [sin, cos]]) @ np.diag([scale * aspect * flip, scale / aspect])
    offset = np.array([cx, cy]) - linear @ np.array([_CANVAS / 2.0, _CANVAS / 2.0])
    return np.hstack([linear, offset[:, None]]).astype(np.float64)


def _paste(image: np.ndarray, label: np.ndarray, parts_map: np.ndarray, rgb: np.ndarray, ids: np.ndarray,
           matrix: np.ndarray, class_index: int) -> None:
    """Composites a canvas into the image (anti-aliased) and writes ``class_index`` where it lands."""
    size = (image.shape[1], image.shape[0])
    alpha = (ids > 0).astype(np.float32)
    warped_rgb = cv2.warpAffine(rgb, matrix, size, flags=cv2.INTER_LINEAR, borderValue=0)
    warped_alpha = cv2.warpAffine(alpha, matrix, size, flags=cv2.INTER_LINEAR, borderValue=0)
    warped_ids = cv2.warpAffine(ids, matrix, size, flags=cv2.INTER_NEAREST, borderValue=0)
    image *= 1.0 - warped_alpha[..., None]
    image += warped_rgb  # rgb is zero outside the parts: a pre-multiplied alpha composite
    inside = warped_ids > 0
    label[inside] = class_index
    parts_map[inside] = warped_ids[inside] if class_index else 0


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency colour field + linear gradient (+ stripes with p = 0.4), ``(S, S, 3)`` float32."""
    cells = int(rng.integers(3, 9))
    field = cv2.resize(rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    direction = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ramp = np.clip(0.5 + (xx - 0.5) * math.cos(direction) + (yy - 0.5) * math.sin(direction), 0, 1)[..., None]
    gradient = rng.uniform(0, 255, size=3) * (1 - ramp) + rng.uniform(0, 255, size=3) * ramp
    weight = rng.uniform(0.2, 0.8)
    image = (weight * field + (1 - weight) * gradient).astype(np.float32)
    if rng.random() < 0.4:
        amplitude = rng.uniform(10, 40)
        stripes = part_texture('vstripes', np.zeros(3, np.float32), np.ones(3, np.float32), rng.uniform(4, 16),
                               size, size, rng, angle=rng.uniform(0, math.pi))
        image += amplitude * (stripes - 0.5)
    return image


def _random_shape(size: int, rng: np.random.Generator) -> Shape:
    """A random distractor shape in image coordinates (polygon, ellipse or rotated rectangle)."""
    radius = rng.uniform(4, max(5.0, 0.2 * size))
    cx, cy = rng.uniform(0, size, size=2)
    kind = int(rng.integers(0, 3))
    if kind == 0:  # star-shaped polygon with 3-7 vertices
        count = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * math.pi, size=count))
        radii = radius * rng.uniform(0.5, 1.0, size=count)
        return 'poly', tuple(zip(cx + radii * np.cos(angles), cy + radii * np.sin(angles)))
    if kind == 1:
        return 'ellipse', (cx, cy, radius, radius * rng.uniform(0.3, 1.0), rng.uniform(0, 180))
    half_w, half_h, angle = radius, radius * rng.uniform(0.2, 1.0), rng.uniform(0, math.pi)
    corners = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return 'poly', tuple(map(tuple, corners @ rotation.T + [cx, cy]))


def _draw_distractor(image: np.ndarray, label: np.ndarray, parts_map: np.ndarray, rng: np.random.Generator, *,
                     pole: bool = False) -> None:
    """Draws a random textured shape (or a thin pole) into the image, labelled background."""
    size = image.shape[0]
    mask = np.zeros((size, size), np.uint8)
    if pole or rng.random() < 0.2:
        thickness = int(rng.integers(2, 5)) if pole else int(rng.integers(2, max(3, size // 16)))
        x0, y0, x1, y1 = (int(v) for v in rng.uniform(-0.2, 1.2, size=4) * size)
        cv2.line(mask, (x0, y0), (x1, y1), 1, thickness)
        centre = ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
    else:
        centre = draw_shape(mask, _random_shape(size, rng), 1)
    kind = TEXTURES[int(rng.integers(0, len(TEXTURES)))]
    colour, colour2 = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    texture = part_texture(kind, colour, colour2, rng.uniform(2, 10), size, size, rng, centre=centre,
                           angle=rng.uniform(0, math.pi))
    inside = mask.astype(bool)
    image[inside] = texture[inside]
    label[inside] = 0
    parts_map[inside] = 0


def make_demo_sample(*, image_size: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws one image of the demo dataset (the design is in the module docstring).

    Args:
        image_size: Height and width of the image in pixels.
        rng: Random generator; all randomness comes from it.

    Returns:
        ``image`` ``(S, S, 3)`` uint8 RGB, ``label`` ``(S, S)`` uint8 class indices into :data:`DEMO_CLASSES`,
        and ``parts`` ``(S, S)`` uint8: ``1 + index`` into :data:`DEMO_PART_APPEARANCES` on object pixels,
        0 on background (for tests and analysis; not written to disk).
    """
    size = image_size
    image = _background(size, rng)
    label = np.zeros((size, size), np.uint8)
    parts_map = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(3, 8))):
        _draw_distractor(image, label, parts_map, rng)
    for _ in range(int(rng.binomial(2, 0.25))):  # loose shared parts: a lone wheel is background
        rgb, ids = _draw_parts([_LOOSE_PARTS[int(rng.integers(0, len(_LOOSE_PARTS)))]], rng)
        _paste(image, label, parts_map, rgb, ids, _placement(size, rng), 0)
    num_objects = int(rng.choice([1, 2, 3, 4], p=[0.2, 0.35, 0.3, 0.15]))
    for _ in range(num_objects):
        class_index = int(rng.integers(1, len(DEMO_CLASSES)))
        rgb, ids = _draw_parts(DEMO_CLASS_PARTS[DEMO_CLASSES[class_index]], rng)
        _paste(image, label, parts_map, rgb, ids, _placement(size, rng), class_index)
    if rng.random() < 0.3:
        _draw_distractor(image, label, parts_map, rng, pole=True)
    image = image * rng.uniform(0.85, 1.15) + rng.uniform(-15, 15)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.2))
    image += rng.normal(0.0, rng.uniform(2, 8), size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), label, parts_map


# ----------------------------------------------------------------------------------------------------- files
_SPLIT_CODES = {'train': 0, 'val': 1}


def _write_split(path: str, ids: Sequence[str]) -> None:
    with open(path, 'w') as f:
        f.write(''.join(f'{i}\n' for i in ids))


def make_demo_dataset(root: str, *, num_labeled: int = 20, num_unlabeled: int = 1000, num_dev: int = 300,
                      num_val: int = 500, image_size: int = 128, seed: int = 0) -> Dict[str, Any]:
    """Writes the demo dataset under ``root`` (created if needed; files of the same ids are overwritten).

    Args:
        root: Output directory.
        num_labeled: Training images listed in ``labeled.txt`` (ids ``demo_train_<num_dev>`` ...).
        num_unlabeled: Further training images, listed in ``unlabeled.txt``; their label PNGs are written too
            (to measure pseudo-label accuracy), but must never feed a training loss.
        num_dev: Training images held out as the development split (``dev.txt``, ids ``demo_train_00000`` ...),
            for choosing hyper-parameters; in no other split.
        num_val: Validation images (``val.txt``, ids ``demo_val_00000`` ...).
        image_size: Height and width of every image (at least 32).
        seed: Seed of the generator (>= 0); the same seed gives byte-identical files.

    Returns:
        ``root``; ``counts`` ``{split: number of images}``; ``splits`` ``{split: ids}``; ``pixel_counts`` and
        ``pixel_fractions`` ``{split: {class name: pixels / fraction of the split's pixels}}``;
        ``image_counts`` ``{split: {class name: images containing the class}}``, for the splits
        ``labeled``, ``unlabeled``, ``train`` (= labeled + unlabeled), ``dev`` (if ``num_dev > 0``) and ``val``.

    Raises:
        ValueError: If a count, the image size or the seed is out of range.
    """
    for name, value, low in (('num_labeled', num_labeled, 1), ('num_unlabeled', num_unlabeled, 0),
                             ('num_dev', num_dev, 0), ('num_val', num_val, 1), ('image_size', image_size, 32),
                             ('seed', seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f'{name} must be an integer >= {low}, got {value!r}.')
    image_dir, label_dir = osp.join(root, 'JPEGImages'), osp.join(root, 'SegmentationClass')
    split_dir = osp.join(root, 'ImageSets', 'Segmentation')
    for path in (image_dir, label_dir, split_dir):
        os.makedirs(path, exist_ok=True)
    palette = [v for rgb in voc_palette() for v in rgb]
    num_classes = len(DEMO_CLASSES)
    ids = {'train': [f'demo_train_{i:05d}' for i in range(num_dev + num_labeled + num_unlabeled)],
           'val': [f'demo_val_{i:05d}' for i in range(num_val)]}
    pixels = {split: np.zeros((len(names), num_classes), np.int64) for split, names in ids.items()}
    for split, names in ids.items():
        for index, sample_id in enumerate(names):
            rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
            image, label, _ = make_demo_sample(image_size=image_size, rng=rng)
            Image.fromarray(image).save(osp.join(image_dir, f'{sample_id}.jpg'), quality=90)
            png = Image.fromarray(label, mode='P')
            png.putpalette(palette)
            png.save(osp.join(label_dir, f'{sample_id}.png'))
            pixels[split][index] = np.bincount(label.ravel(), minlength=num_classes)[:num_classes]
    first_unlabeled = num_dev + num_labeled
    splits = {'labeled': ids['train'][num_dev:first_unlabeled], 'unlabeled': ids['train'][first_unlabeled:],
              'train': ids['train'][num_dev:], 'val': ids['val']}
    per_image = {'labeled': pixels['train'][num_dev:first_unlabeled],
                 'unlabeled': pixels['train'][first_unlabeled:], 'train': pixels['train'][num_dev:],
                 'val': pixels['val']}
    if num_dev:
        splits['dev'], per_image['dev'] = ids['train'][:num_dev], pixels['train'][:num_dev]
    for name, names in splits.items():
        _write_split(osp.join(split_dir, f'{name}.txt'), names)
    stats: Dict[str, Any] = {'root': root, 'counts': {name: len(names) for name, names in splits.items()},
                             'splits': splits, 'pixel_counts': {}, 'pixel_fractions': {}, 'image_counts': {}}
    for name, table in per_image.items():
        totals = table.sum(axis=0)
        stats['pixel_counts'][name] = {cls: int(n) for cls, n in zip(DEMO_CLASSES, totals)}
        stats['pixel_fractions'][name] = {cls: float(n) / max(1, int(totals.sum()))
                                          for cls, n in zip(DEMO_CLASSES, totals)}
        stats['image_counts'][name] = {cls: int(n) for cls, n in zip(DEMO_CLASSES, (table > 0).sum(axis=0))}
    return stats
