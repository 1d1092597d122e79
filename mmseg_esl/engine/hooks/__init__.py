"""Hooks. The EMA-teacher and prototype-initialisation hooks land here."""
