"""torch.sort's order of equal keys: CPU torch.sort(stable=False) sorts each row with libstdc++'s std::sort
(introsort: median-of-three quicksort down to 16 entries, heapsort past 2*log2(n) levels, then insertion sort)
on (value, index) pairs compared by value only (ATen SortingKernel.cpp KeyValueCompAsc: NaN the largest). Rows
of at most 16 entries come out in stable order; longer rows order equal keys as this replay does, checked
against torch.sort on rows of 1 to 50,000 entries with ties, infinities and NaNs
(tests/test_generation_processors_live.py). Python loops: processors.py calls it only for the rows whose
result depends on the order of equal keys."""
from __future__ import annotations

import math


def _lt(a, b):  # ATen KeyValueCompAsc: NaN is the largest
    return (a == a and b != b) or a < b


def torch_sort_order(keys):  # keys [n] floats -> [n] the indices in torch.sort's order
    v, ix = list(keys), list(range(len(keys)))

    def lt(i, j):
        return _lt(v[i], v[j])

    def swap(i, j):
        v[i], v[j] = v[j], v[i]
        ix[i], ix[j] = ix[j], ix[i]

    def median_to_first(result, a, b, c):
        if lt(a, b):
            swap(result, b if lt(b, c) else c if lt(a, c) else a)
        else:
            swap(result, a if lt(a, c) else c if lt(b, c) else b)

    def partition(first, last, pivot):
        while True:
            while lt(first, pivot):
                first += 1
            last -= 1
            while lt(pivot, last):
                last -= 1
            if not first < last:
                return first
            swap(first, last)
            first += 1

    def adjust_heap(base, hole, length, value):
        top, child = hole, hole
        while child < (length - 1) // 2:
            child = 2 * (child + 1)
            if lt(base + child, base + child - 1):
                child -= 1
            v[base + hole], ix[base + hole] = v[base + child], ix[base + child]
            hole = child
        if length % 2 == 0 and child == (length - 2) // 2:
            child = 2 * (child + 1)
            v[base + hole], ix[base + hole] = v[base + child - 1], ix[base + child - 1]
            hole = child - 1
        parent = (hole - 1) // 2
        while hole > top and _lt(v[base + parent], value[0]):
            v[base + hole], ix[base + hole] = v[base + parent], ix[base + parent]
            hole = parent
            parent = (hole - 1) // 2
        v[base + hole], ix[base + hole] = value

    def heap_sort(first, last):  # std::__partial_sort(first, last, last): make_heap, then sort_heap
        length = last - first
        if length >= 2:
            for parent in range((length - 2) // 2, -1, -1):
                adjust_heap(first, parent, length, (v[first + parent], ix[first + parent]))
        while last - first > 1:
            last -= 1
            value = (v[last], ix[last])
            v[last], ix[last] = v[first], ix[first]
            adjust_heap(first, 0, last - first, value)

    def introsort(first, last, depth):
        while last - first > 16:
            if depth == 0:
                heap_sort(first, last)
                return
            depth -= 1
            median_to_first(first, first + 1, first + (last - first) // 2, last - 1)
            cut = partition(first + 1, last, first)
            introsort(cut, last, depth)
            last = cut

    def linear_insert(i):  # __unguarded_linear_insert
        value = (v[i], ix[i])
        while _lt(value[0], v[i - 1]):
            v[i], ix[i] = v[i - 1], ix[i - 1]
            i -= 1
        v[i], ix[i] = value

    def insertion_sort(first, last):
        for i in range(first + 1, last):
            if lt(i, first):
                value = (v[i], ix[i])
                v[first + 1:i + 1], ix[first + 1:i + 1] = v[first:i], ix[first:i]
                v[first], ix[first] = value
            else:
                linear_insert(i)

    n = len(v)
    if n > 1:
        introsort(0, n, 2 * int(math.floor(math.log2(n))))
        insertion_sort(0, min(n, 16))
        for i in range(16, n):
            linear_insert(i)
    return ix
