"""Peak memory while training (metrics.json's train_peak_mib): reset at the start, read at the end."""

import sys

import pytest
import torch

from attnzoo.training import memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the CPU probe reads Linux's /proc")
def test_the_peak_sees_an_allocation_made_after_the_reset_and_forgets_one_before():
    cpu = torch.device("cpu")
    before = torch.ones(64 * 2 ** 20 // 4)  # 64 MiB, freed before the reset
    del before
    memory.reset(cpu)
    base = memory.peak_bytes(cpu)
    big = torch.ones(200 * 2 ** 20 // 4)  # 200 MiB, touched
    grown = memory.peak_bytes(cpu) - base
    del big
    assert grown >= 150 * 2 ** 20, grown
    memory.reset(cpu)
    assert memory.peak_bytes(cpu) - base < 100 * 2 ** 20, "the reset forgets the freed 200 MiB"
