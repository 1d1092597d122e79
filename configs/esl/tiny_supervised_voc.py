# Foundation smoke config: a plain (supervised) mmseg EncoderDecoder on the tiny generated dataset, trained
# for 2 iterations. It proves that mmseg's own tools, our tools, resume and DDP work through mmseg_esl.
#   python tools/make_tiny_dataset.py --out data/tiny_voc
#   python tools/train.py configs/esl/tiny_supervised_voc.py
_base_ = [
    '../_base_/models/deeplabv3plus_tiny-r18.py',
    '../_base_/datasets/tiny_voc.py',
    '../_base_/schedules/schedule_tiny.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmseg_esl'], allow_failed_imports=False)
randomness = dict(seed=0)
