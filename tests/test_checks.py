"""``mmseg_esl.checks``: one positive-int rule for every constructor (numpy integers pass, bools never)."""
import numpy as np
import pytest

from mmseg_esl.checks import is_positive_int, positive_int
from mmseg_esl.models.decode_heads.projector_head import ProjectorHead
from mmseg_esl.models.utils.memory_bank import PartMemoryBank
from mmseg_esl.models.utils.prototypes import ClassPixelReservoir


@pytest.mark.parametrize('value', [1, 7, np.int64(3), np.int32(1), np.uint8(2)])
def test_integers_from_python_and_numpy_pass_as_int(value):
    assert is_positive_int(value)
    result = positive_int('k', value)
    assert result == int(value) and type(result) is int


@pytest.mark.parametrize('value', [0, -1, True, False, 2.0, '3', None, np.float64(2.0), np.int64(0)])
def test_everything_else_is_refused_with_name_value_and_owner(value):
    assert not is_positive_int(value)
    with pytest.raises(ValueError) as info:
        positive_int('queue_size', value, owner='PartMemoryBank')
    assert str(info.value) == (f'PartMemoryBank: queue_size must be a positive integer (an integer >= 1), got '
                               f'queue_size={value!r}.')


def test_constructors_that_disagreed_on_numpy_ints_now_accept_them():
    head = ProjectorHead(in_channels=np.int64(8), channels=np.int64(4), out_channels=np.int64(6), norm_cfg=None)
    assert (head.in_channels, head.channels, head.out_channels) == (8, 4, 6)
    reservoir = ClassPixelReservoir(num_classes=np.int64(3), max_pixels_per_class=np.int64(10), dim=np.int64(4))
    assert reservoir.num_classes == 3 and reservoir.dim == 4
    bank = PartMemoryBank(num_classes=np.int64(2), num_parts=np.int64(2), queue_size=np.int64(4), dim=np.int64(3))
    assert tuple(bank.queues.shape) == (4, 4, 3) and type(bank.num_classes) is int
