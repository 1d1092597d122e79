"""Two CPU processes (gloo) train ESLSegmentor with the contrastive term on different data: shared state agrees.

Every rank must end with the same memory bank (part means of *all* ranks, gathered before enqueueing), the
same prototypes (Eq. 12 all-reduces sums and counts) and the same teacher (EMA of DDP-synchronised students).
The model has no BatchNorm: with plain BN the students' running statistics differ per rank and the teacher
copies them (see EMATeacherHook); that is a separate matter from the contrastive state tested here.
"""
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import clean_env, free_port

WORKER = textwrap.dedent('''
    import sys

    import torch
    import torch.distributed as dist
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    from torch.nn.parallel import DistributedDataParallel

    import mmseg_esl  # noqa: F401
    from mmseg_esl.engine.hooks.ema_teacher_hook import ema_update_
    from mmseg_esl.models.segmentors import ESLSegmentor
    from mmseg_esl.testing.stub_segmentor import stub_segmentor_cfg

    rank, world_size, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world_size)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = ESLSegmentor(
        segmentor=stub_segmentor_cfg(),
        semi_train_cfg=dict(loss_contrast=dict(feat_channels=4, num_parts=2, stride=2, queue_size=64,
                                               num_negatives=7, conf_thresh=0.3)),
        projector=dict(type='ProjectorHead', channels=4, out_channels=3, norm_cfg=None))
    model.init_weights()
    model.contrast_loss.set_prototypes_(torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(7)))
    ddp = DistributedDataParallel(model, device_ids=None)
    optimizer = torch.optim.SGD(model.student.parameters(), lr=0.1)

    enqueued = []
    update = model.contrast_loss.update
    def recording_update(*args, **kwargs):
        result = update(*args, **kwargs)
        enqueued.append(result['parts_enqueued'].item())
        return result
    model.contrast_loss.update = recording_update

    g = torch.Generator().manual_seed(100 + rank)  # every rank sees different images
    h, w = 8, 6
    for step in range(4):
        inputs = torch.randn(4, 3, h, w, generator=g)
        samples = []
        for i in range(4):
            ds = SegDataSample(metainfo=dict(is_labeled=i < 2, img_shape=(h, w), pad_shape=(h, w),
                                             ori_shape=(h, w)))
            if i < 2:
                ds.gt_sem_seg = PixelData(data=torch.randint(0, 3, (1, h, w), generator=g))
            samples.append(ds)
        losses = ddp(inputs, samples, mode='loss')
        loss = sum(v for k, v in losses.items() if 'loss' in k)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema_update_(model.teacher, model.student, 0.5)
        if step == 0:
            first_fill = model.contrast_loss.bank.fill.clone()
    torch.save(dict(contrast=model.contrast_loss.state_dict(), teacher=model.teacher.state_dict(),
                    enqueued=enqueued, first_fill=first_fill, loss_ctr=losses['contrast.loss_ctr'].item(),
                    anchors=losses['contrast.anchors'].item()), out)
    dist.destroy_process_group()
''')


@pytest.mark.slow
def test_two_ranks_share_bank_prototypes_and_teacher(tmp_path):
    world_size, script = 2, tmp_path / 'worker.py'
    script.write_text(WORKER)
    port = str(free_port())
    env = clean_env({'OMP_NUM_THREADS': '1'})
    outs = [tmp_path / f'rank{rank}.pth' for rank in range(world_size)]
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), str(world_size), port, str(out)],
                              cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank, out in enumerate(outs)]
    try:
        logs = [proc.communicate(timeout=120)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rank, proc in enumerate(procs):
        assert proc.returncode == 0, f'rank {rank} exited with {proc.returncode}:\n{logs[rank][-4000:]}'
    results = [torch.load(out, weights_only=False) for out in outs]

    for name, value in results[0]['contrast'].items():
        assert torch.equal(value, results[1]['contrast'][name]), name
    for name, value in results[0]['teacher'].items():
        assert torch.equal(value, results[1]['teacher'][name]), name
    # The ranks saw different images: different numbers of part means, and the bank holds all of them.
    per_rank = [result['enqueued'] for result in results]
    assert per_rank[0] != per_rank[1]
    assert results[0]['first_fill'].sum().item() == per_rank[0][0] + per_rank[1][0]
    assert results[0]['contrast']['bank.fill'].sum().item() == sum(map(sum, per_rank))  # 64 slots: no wrap yet
    # The prototypes moved from their common start, identically.
    start = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(7))
    assert not torch.equal(results[0]['contrast']['prototypes'], start)
    assert all(result['anchors'] > 0 and result['loss_ctr'] > 0 for result in results)
