"""The CUDA emulation is confined to the tests marked `cuda` (these are not marked)."""
from __future__ import annotations

import sys

import cuda_emu
from infinet.runtime.backends import cuda_usable


def _stand_in_visible() -> bool:
    mod = sys.modules.get("cupy")
    return mod is not None and getattr(mod, "__cuda_emu__", False)


def test_outside_cuda_tests_nothing_sees_the_stand_in():
    assert not _stand_in_visible()
    assert cuda_usable() == cuda_emu.real_gpu()


def test_activation_is_undone_on_exit():
    before = {k: v for k, v in sys.modules.items() if k.startswith("cupy")}
    with cuda_emu.activated(emulator=True) as where:
        assert where == "emulator" and _stand_in_visible()
        assert cuda_usable()                    # infinet's cached answer was cleared
    assert {k: v for k, v in sys.modules.items() if k.startswith("cupy")} == before
    assert cuda_usable() == cuda_emu.real_gpu()
