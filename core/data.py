"""Framework-agnostic mini-batch loading over numpy arrays.

`DataLoader` turns a dataset into an iterable of batches, each a tuple of numpy arrays.
Array-backed data (`ArrayDataset`, a bare array, or a tuple of arrays) is batched by indexing
whole arrays at once: one fancy-index per array per batch, no Python loop over samples.
Any other object with `__len__`/`__getitem__` works too, sample by sample, and its samples
are stacked into batches.

    loader = DataLoader((images, labels), batch_size=128, shuffle=True, seed=0)
    for x, y in loader: ...
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np

__all__ = ["Dataset", "ArrayDataset", "DataLoader"]


@runtime_checkable
class Dataset(Protocol):
    """Anything with a length whose items are samples (an array or a tuple of arrays)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> Any: ...


class ArrayDataset:
    """Samples are the rows of equally long arrays: `ds[i] == (a[i], b[i], ...)`.

    `i` may be an int, a slice or an integer index array, so a whole batch is one lookup.
    """

    __slots__ = ("arrays",)

    def __init__(self, *arrays: Any):
        if not arrays:
            raise ValueError("ArrayDataset needs at least one array")
        self.arrays = tuple(np.asarray(a) for a in arrays)
        lengths = [len(a) for a in self.arrays]
        if len(set(lengths)) != 1:
            raise ValueError(f"ArrayDataset arrays must have the same length (first dimension), got {lengths}")

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index: Any) -> tuple[np.ndarray, ...]:
        return tuple(a[index] for a in self.arrays)


class DataLoader:
    """Iterate over a dataset in mini-batches, each a tuple of numpy arrays.

    dataset_or_arrays: a `Dataset`, an `ArrayDataset`, a numpy array, or a tuple/list of arrays.
    shuffle: draw a fresh permutation at the start of every epoch (every `iter()`).
    drop_last: skip the final batch when it is smaller than `batch_size`.
    seed / generator: the source of the permutations. The same seed gives the same sequence of
        epochs; a shared `np.random.Generator` lets the caller own the random stream.
        Without either, shuffling is not reproducible.

    Without shuffling, array-backed batches are views into the arrays (no copy): do not modify
    them in place. With shuffling they are fresh copies.
    """

    def __init__(
        self,
        dataset_or_arrays: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
        generator: np.random.Generator | None = None,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if seed is not None and generator is not None:
            raise ValueError("pass either seed or generator, not both")
        self.dataset = _as_dataset(dataset_or_arrays)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator if generator is not None else np.random.default_rng(seed)
        self._order = None  # the current epoch's permutation (shuffle) and its next batch
        self._next = None

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        """The batches of an epoch. An epoch left unfinished (a loop that broke off, a checkpoint
        restored into the middle of one) is continued rather than restarted."""
        if self._next is None or self._next >= len(self):
            self._order = self.generator.permutation(len(self.dataset)) if self.shuffle else None
            self._next = 0
        while self._next < len(self):
            index = self._next
            self._next += 1  # counted before the caller sees the batch: a checkpoint taken after it resumes past it
            yield self._batch(index)

    def _batch(self, index):
        start = index * self.batch_size
        stop = min(start + self.batch_size, len(self.dataset))
        order = self._order
        if isinstance(self.dataset, ArrayDataset):
            return self.dataset[order[start:stop] if order is not None else slice(start, stop)]
        indices = order[start:stop].tolist() if order is not None else range(start, stop)
        return _collate([self.dataset[i] for i in indices])

    @property
    def batches_done(self) -> int:
        """Batches of the current epoch already handed out."""
        return 0 if self._next is None or self._next >= len(self) else self._next

    def state_dict(self) -> dict:
        """Where the iteration stands: the random stream, the current epoch's order and position.
        Restored with `load_state_dict`, the loader hands out exactly the batches it would have."""
        return {"generator": self.generator.bit_generator.state, "order": self._order, "next": self._next}

    def load_state_dict(self, state: dict) -> None:
        self.generator.bit_generator.state = state["generator"]
        self._order, self._next = state["order"], state["next"]


def _as_dataset(data: Any) -> Dataset:
    if isinstance(data, np.ndarray):
        return ArrayDataset(data)
    if isinstance(data, (tuple, list)) and data and all(isinstance(a, np.ndarray) for a in data):
        return ArrayDataset(*data)
    if isinstance(data, Dataset):
        return data
    raise TypeError(
        f"DataLoader needs a dataset (with __len__ and __getitem__), an array or a tuple of arrays, "
        f"got {type(data).__name__}"
    )


def _collate(samples: list[Any]) -> tuple[np.ndarray, ...]:
    # A sample is either one array-like or a tuple of fields; stack each field along a new batch axis.
    if isinstance(samples[0], tuple):
        return tuple(np.stack([np.asarray(field) for field in fields]) for fields in zip(*samples))
    return (np.stack([np.asarray(s) for s in samples]),)
