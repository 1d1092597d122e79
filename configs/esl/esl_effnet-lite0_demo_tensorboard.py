# Demo "ESL" (esl_effnet-lite0_demo.py) watched in TensorBoard: the logged scalars (losses, the DSL statistics
# unsup.dominant_classes / multi_dominant / teacher_conf / pseudo_acc, contrast.*) go to a TensorBoard events file
# as well as to vis_data/scalars.json, and every 50 iterations PseudoLabelVisHook draws the teacher's number of
# dominant classes per pixel (paper Fig. 3) for 4 unlabeled images of the batch, as an image in TensorBoard and
# as vis_data/vis_image/dominant_classes_<iter>.png. Needs the tensorboard package (pip install tensorboard).
#   python tools/train.py configs/esl/esl_effnet-lite0_demo_tensorboard.py
#   tensorboard --logdir work_dirs/esl_effnet-lite0_demo_tensorboard
_base_ = ['./esl_effnet-lite0_demo.py']
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
custom_hooks = [*_base_.custom_hooks, dict(type='PseudoLabelVisHook', interval=50, max_images=4)]
