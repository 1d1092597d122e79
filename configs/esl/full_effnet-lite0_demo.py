# Demo upper bound "Full": the supervised baseline trained on EVERY training image with its label (the 20 labeled
# and the 1,000 unlabeled ones), same model, batch and schedule as "Sup". The gap Sup -> Full is what unlabeled
# images can at most recover (tools/benchmarks/ssl_gain.py reports the fraction each method closes).
_base_ = ['./supervised_effnet-lite0_demo.py']
train_dataloader = dict(dataset=dict(ann_file='ImageSets/Segmentation/train.txt'))
