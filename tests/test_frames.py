import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcodec.frames import from_frames, plan_layout, to_frames


@pytest.mark.parametrize("packing", ["luma", "yuv420"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (64, 64), (100, 250), (576, 1536), (3000, 50)])
def test_round_trip_exact(shape, packing):
    rng = np.random.default_rng(0)
    q = rng.integers(0, 1024, size=shape, dtype=np.uint16)
    layout = plan_layout(*shape, align=8, min_size=64, max_w=256, max_h=512, packing=packing)
    frames = to_frames(q, layout)
    assert len(frames) == layout.n_frames
    for planes in frames:
        assert planes[0].shape == (layout.frame_h, layout.frame_w)
        assert layout.frame_h % 8 == 0 and layout.frame_w % 8 == 0
        assert layout.frame_h <= 512 and layout.frame_w <= 256
        if packing == "yuv420":
            assert planes[1].shape == planes[2].shape == (layout.frame_h // 2, layout.frame_w // 2)
    assert np.array_equal(from_frames(frames, layout), q)


def test_tiles_when_larger_than_frame_limit():
    layout = plan_layout(14336, 4096, max_w=4096, max_h=2176)
    assert layout.n_frames == 7 and layout.tile_h == 2048


def test_layout_errors_are_clear():
    with pytest.raises(ValueError, match="empty"):
        plan_layout(0, 5)
    with pytest.raises(ValueError, match="packing"):
        plan_layout(5, 5, packing="rgb")
    layout = plan_layout(10, 10)
    with pytest.raises(ValueError, match="does not match"):
        to_frames(np.zeros((11, 10), np.uint16), layout)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 700),
    cols=st.integers(1, 700),
    packing=st.sampled_from(["luma", "yuv420"]),
    max_w=st.sampled_from([64, 128, 512]),
    max_h=st.sampled_from([64, 96, 512]),
    seed=st.integers(0, 9),
)
def test_round_trip_property(rows, cols, packing, max_w, max_h, seed):
    q = np.random.default_rng(seed).integers(0, 4096, size=(rows, cols), dtype=np.uint16)
    layout = plan_layout(rows, cols, max_w=max_w, max_h=max_h, packing=packing)
    assert np.array_equal(from_frames(to_frames(q, layout), layout), q)
