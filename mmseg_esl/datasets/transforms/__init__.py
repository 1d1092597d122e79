"""Data transforms for semi-supervised training (weak/strong branches)."""
