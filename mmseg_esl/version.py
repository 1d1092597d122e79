"""Version of mmseg-esl."""

__version__ = '0.1.0'
