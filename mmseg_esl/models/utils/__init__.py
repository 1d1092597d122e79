"""Model-side helpers shared by segmentors and losses (CutMix, memory bank, ...)."""
