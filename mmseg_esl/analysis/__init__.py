"""What the analysis tools (``tools/analysis/*.py``) read: an ESL model from a config and checkpoint, and images.

One module each: :mod:`.model_loading` (config and model), :mod:`.images` (images through the test pipeline),
:mod:`.arguments` (the command-line helpers every tool shares), :mod:`.errors`.
"""
from .arguments import add_common_arguments, add_overlay_arguments, check_overlay_arguments, run_tool, write_json
from .errors import AnalysisError
from .images import IMAGE_SUFFIXES, SPLITS, AnalysisSample, ImageSource
from .model_loading import class_names, load_config, load_model, require_esl, select_classes, set_data_roots

__all__ = [
    'AnalysisError', 'AnalysisSample', 'IMAGE_SUFFIXES', 'ImageSource', 'SPLITS', 'add_common_arguments',
    'add_overlay_arguments', 'check_overlay_arguments', 'class_names', 'load_config', 'load_model', 'require_esl',
    'run_tool', 'select_classes', 'set_data_roots', 'write_json'
]
