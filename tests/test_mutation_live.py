"""Live checks (torch) for paths the other tests leave: the heapsort fallback of the torch-order sort,
against torch.sort itself on inputs that drive libstdc++'s introsort past its depth limit."""
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from refimpl.generation.torch_sort import torch_sort_order  # noqa: E402


def median_of_three_killer(n):  # Musser (1997): quicksort with median-of-3 pivots degrades to O(n^2)
    k, out = n // 2, [0] * n
    for i in range(1, k + 1):
        if i % 2:
            out[i - 1], out[i] = i, k + i
        out[k + i - 1] = 2 * i
    return out


def reaches_heapsort(keys):
    """Whether the replay falls back to heapsort on `keys` (watched with a profile hook)."""
    seen = []

    def hook(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "heap_sort":
            seen.append(True)

    sys.setprofile(hook)
    try:
        torch_sort_order(keys)
    finally:
        sys.setprofile(None)
    return bool(seen)


@pytest.mark.parametrize("n, ties", [(128, 1), (128, 2), (256, 2), (512, 1), (512, 2)])
def test_heapsort_fallback_matches_torch_sort(n, ties):
    keys = np.array([v // ties for v in median_of_three_killer(n)], dtype=np.float32)
    assert reaches_heapsort(list(keys)), "the input no longer drives introsort into its heapsort"
    expected = torch.sort(torch.from_numpy(keys), stable=False).indices.tolist()
    assert torch_sort_order(list(keys)) == expected


def test_heapsort_fallback_with_nan_and_infinities_matches_torch_sort():
    keys = np.array(median_of_three_killer(512), dtype=np.float32) // 2
    keys[[500, 501, 502]] = np.nan
    keys[499] = np.inf
    assert reaches_heapsort(list(keys))
    expected = torch.sort(torch.from_numpy(keys), stable=False).indices.tolist()
    assert torch_sort_order(list(keys)) == expected
