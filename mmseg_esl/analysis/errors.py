"""The error the analysis tools print without a traceback."""


class AnalysisError(ValueError):
    """A user error of an analysis tool; its message says what is wrong and how to fix it (no traceback)."""
