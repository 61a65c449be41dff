"""Streaming metrics: state accumulated over batches, read at any time, cleared with `reset()`.

    precision = Precision()
    for y_true, y_pred in batches:
        precision.update(y_true, y_pred)
    precision.result()          # TP / (TP + FP) over everything seen since the last reset
    precision.reset()

As Keras' `tf.keras.metrics.Precision` / `Recall` / `Mean` (HOML ch. 12): after several batches the
result comes from the summed counts, not from the mean of per-batch results (fixture FX-LS-5:
precision 0.8 after one batch, then 0.5 for both, where per-batch values would average 0.65).
Inputs are numpy/cupy arrays, core Tensors or lists; a prediction counts as positive when it is
above `threshold` (probabilities or 0/1 labels both work). A ratio with nothing counted is 0.
"""
import numpy as np

from core.backend import to_numpy


class _Ratio:
    """numerator / denominator, both summed over every update."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.numerator = 0.0
        self.denominator = 0.0

    def result(self):
        return self.numerator / self.denominator if self.denominator else 0.0


class _BinaryCounts(_Ratio):
    """True positives over the positives that `_counted` picks: the predicted ones (precision) or the
    actual ones (recall)."""

    def __init__(self, threshold=0.5):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold
        super().__init__()

    def update(self, y_true, y_pred):
        truth, predicted = to_numpy(y_true).astype(bool).ravel(), (to_numpy(y_pred) > self.threshold).ravel()
        if truth.shape != predicted.shape:
            raise ValueError(f"y_true and y_pred must have the same number of entries, got {truth.size} and "
                             f"{predicted.size}")
        self.numerator += float(np.sum(truth & predicted))
        self.denominator += float(np.sum(self._counted(truth, predicted)))
        return self


class Precision(_BinaryCounts):
    """TP / (TP + FP) over every batch since the last reset."""

    @staticmethod
    def _counted(truth, predicted):
        return predicted  # TP + FP


class Recall(_BinaryCounts):
    """TP / (TP + FN) over every batch since the last reset."""

    @staticmethod
    def _counted(truth, predicted):
        return truth  # TP + FN


class Mean(_Ratio):
    """The (optionally weighted) mean of every value passed since the last reset."""

    def update(self, values, weights=None):
        values = to_numpy(values).astype(np.float64)
        weights = np.ones_like(values) if weights is None else np.broadcast_to(to_numpy(weights), values.shape)
        self.numerator += float(np.sum(values * weights))
        self.denominator += float(np.sum(weights))
        return self
