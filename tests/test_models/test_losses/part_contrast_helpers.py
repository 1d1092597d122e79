"""Shared by the pixel-to-part contrast tests: seeded generators, random maps and naive float64 references."""
import math
from typing import List, Optional, Tuple

import torch

IGNORE = 255


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_maps(n: int, h: int, w: int, num_classes: int, seed: int, present: Optional[Tuple[int, ...]] = None,
                ignore_frac: float = 0.2) -> torch.Tensor:
    """A random class map with about ``ignore_frac`` ignored pixels, drawing only the classes in ``present``."""
    g = seeded(seed)
    present = tuple(range(num_classes)) if present is None else present
    choice = torch.randint(len(present), (n, h, w), generator=g)
    class_map = torch.tensor(present)[choice]
    return torch.where(torch.rand((n, h, w), generator=g) < ignore_frac, IGNORE, class_map)


# ----------------------------------------------------- naive references: one pixel / anchor at a time, float64


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(a @ b / (a.norm() * b.norm()))


def reference_assign(feats, class_map, prototypes) -> torch.Tensor:
    n, _, h, w = feats.shape
    out = torch.full((n, h, w), -9, dtype=torch.long)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                c = int(class_map[i, y, x])
                if c == IGNORE:
                    out[i, y, x] = -1
                    continue
                sims = [cosine(feats[i, :, y, x], proto) for proto in prototypes[c]]
                out[i, y, x] = max(range(len(sims)), key=lambda k: (sims[k], -k))
    return out


def reference_pool(feats, class_map, part_map, num_classes, num_parts):
    n, dim, h, w = feats.shape
    sums = torch.zeros((n, num_classes, num_parts, dim), dtype=torch.float64)
    counts = torch.zeros((n, num_classes, num_parts), dtype=torch.long)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                c, k = int(class_map[i, y, x]), int(part_map[i, y, x])
                if c == IGNORE or k < 0:
                    continue
                sums[i, c, k] += feats[i, :, y, x].double()
                counts[i, c, k] += 1
    means = torch.zeros_like(sums)
    for i in range(n):
        for c in range(num_classes):
            for k in range(num_parts):
                if counts[i, c, k]:
                    means[i, c, k] = sums[i, c, k] / int(counts[i, c, k])
    return means, counts


def reference_infonce(anchors, positives, negatives, temperature) -> List[float]:
    losses = []
    for j in range(anchors.shape[0]):
        pos = math.exp(cosine(anchors[j], positives[j]) / temperature)
        neg = sum(math.exp(cosine(anchors[j], v) / temperature) for v in negatives[j])
        losses.append(-math.log(pos / (pos + neg)))
    return losses


def random_bank_problem(seed: int, num_anchors=10, num_entries=40, num_neg=7, dim=6):
    g = seeded(seed)
    anchors = torch.randn((num_anchors, dim), generator=g)
    bank = torch.randn((num_entries, dim), generator=g)
    pos_idx = torch.randint(num_entries, (num_anchors,), generator=g)
    neg_idx = torch.randint(num_entries, (num_anchors, num_neg), generator=g)
    return anchors, bank, pos_idx, neg_idx
