import random

import pytest

from framepack_trt.shapes import DimRange, random_sizes, sizes_at, trace_sizes


def test_dimrange_rejects_bad_order():
    with pytest.raises(ValueError):
        DimRange(4, 2, 8)
    with pytest.raises(ValueError):
        DimRange(0, 1, 2)


def test_trace_sizes_avoid_0_1_and_collisions():
    dims = {"batch": DimRange(1, 1, 4), "text_len": DimRange(1, 2, 64), "h": DimRange(3, 3, 3)}
    sizes = trace_sizes(dims, avoid={77})
    assert sizes["h"] == 3  # static stays
    assert sizes["batch"] >= 2 and sizes["text_len"] >= 2
    assert sizes["batch"] != sizes["text_len"]
    for name, r in dims.items():
        assert r.min <= sizes[name] <= r.max


def test_trace_sizes_avoids_static_sizes():
    sizes = trace_sizes({"batch": DimRange(1, 77, 80)}, avoid={77})
    assert sizes["batch"] != 77


def test_sizes_at_and_random_in_range():
    dims = {"a": DimRange(1, 5, 9), "b": DimRange(2, 2, 2)}
    assert sizes_at(dims, "min") == {"a": 1, "b": 2}
    assert sizes_at(dims, "max") == {"a": 9, "b": 2}
    rng = random.Random(0)
    for _ in range(50):
        s = random_sizes(dims, rng)
        assert 1 <= s["a"] <= 9 and s["b"] == 2


def test_trace_sizes_keep_multiples_when_opts_collide():
    """A square first bucket: height and width share their opt; the second moves to the next
    even size, not to an odd one the transformer's 2x2 patch cannot take."""
    dims = {"h": DimRange(16, 24, 32), "w": DimRange(16, 24, 32)}
    assert trace_sizes(dims) == {"h": 24, "w": 25}
    assert trace_sizes(dims, multiples={"h": 2, "w": 2}) == {"h": 24, "w": 26}
