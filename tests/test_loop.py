import numpy as np
import torch

from clsp.loop import GlobalBatchSampler, derived_seed, keyed_generator


def test_two_processes_together_see_what_one_process_sees():
    one = list(GlobalBatchSampler(50, 8, 0, 1, 3, 0, 13))
    r0 = list(GlobalBatchSampler(50, 8, 0, 2, 3, 0, 13))
    r1 = list(GlobalBatchSampler(50, 8, 1, 2, 3, 0, 13))
    assert [a + b for a, b in zip(r0, r1, strict=True)] == one
    assert len(one) == 13 and one[6][0][0] == 1  # 6 steps per epoch (drop_last), step 6 is in epoch 1
    assert len({k for batch in one[:6] for k in batch}) == 48
    assert list(GlobalBatchSampler(50, 8, 0, 1, 3, 4, 13)) == one[4:]


def test_derived_seeds_are_63_bit_pure_functions_of_the_key():
    assert derived_seed(3, 1, 7) == derived_seed(3, 1, 7) != derived_seed(3, 7, 1)
    assert all(0 <= derived_seed(s, 0) < 2**63 for s in range(50))
    expected = int(np.random.SeedSequence([5, 2]).generate_state(1, np.uint64)[0]) >> 1
    assert derived_seed(5, 2) == expected
    a, b = (torch.rand(4, generator=keyed_generator(5, 2)) for _ in range(2))
    assert torch.equal(a, b) and not torch.equal(a, torch.rand(4, generator=keyed_generator(5, 3)))
