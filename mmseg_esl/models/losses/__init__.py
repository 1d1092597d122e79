"""Losses. Dynamic Soft Label (Eq. 3-6) and pixel-to-part contrast (Eq. 7-10) land here."""
