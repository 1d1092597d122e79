# Demo "MT-DSL": the mean teacher of mt-hard_effnet-lite0_demo.py with Dynamic Soft Labels (Eq. 3-6,
# eta = 0.95) instead of one-hot pseudo labels; still no contrastive term (Tab. 4, K = 0).
_base_ = ['./mt-hard_effnet-lite0_demo.py']
model = dict(semi_train_cfg=dict(loss_unsup=dict(type='DSLLoss', mode='dsl', eta=0.95, loss_weight=0.2)))
