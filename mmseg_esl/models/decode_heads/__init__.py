"""Decode heads. The projector head of ESL §3.1 (``ProjectorHead``) lands here (contrastive issue)."""
