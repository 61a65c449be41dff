"""Sample quality from the lab's own small classifier: a Fréchet distance on its features, and class coverage.

This is classifier-based, NOT Inception FID: the features come from a small CNN trained here on the
dataset itself (two 3×3 conv + max-pool blocks, then a 64-unit hidden layer; its activations are the
features), so the numbers are only comparable between runs that use the same classifier (same dataset,
image size and `QualityConfig`), never with published FID values.

- `quality/frechet_distance`: ‖μ_r − μ_g‖² + tr(Σ_r + Σ_g − 2·(Σ_r Σ_g)^½) between the Gaussians fitted to
  the features of real and of generated images. tr((Σ_r Σ_g)^½) uses `scipy.linalg.sqrtm` when scipy is
  installed; otherwise (and as the fallback when sqrtm returns non-finite values) it is the sum of the
  square roots of the eigenvalues of Σ_r^½ Σ_g Σ_r^½, a symmetric matrix with the same eigenvalues as
  Σ_r Σ_g, so symmetric eigen-decompositions suffice. Lower is better; 0 for identical distributions.
- `quality/frechet_distance_relative`: that distance over tr(Σ_r), which is the distance of samples whose
  features all equal the real features' mean; free of the classifier's feature scale (held-out real MNIST
  images about 0.003-0.012, noise and collapsed generators above 1).
- `quality/class_entropy`: entropy (nats) of the classifier's predicted labels over the generated images;
  `quality/class_entropy_real` is the same on real images. `quality/mode_collapse` flags runs whose
  effective number of classes exp(H) is below `collapse_ratio` times that of the real data.
- `quality/score`: exp(E_x KL(p(y|x) ‖ p(y))) over the generated images, the Inception-score formula on
  this classifier: between 1 and the number of classes, high when each image is one clear class and the
  classes are balanced; `quality/score_real` is the same on real images (the ceiling to compare with).
- `quality/classes_covered_real`: how many classes the classifier assigns to at least a quarter of their
  uniform share of the real images (2.5% for ten classes): the classes the run trains on (1 for the sevens
  of `dataset.classes=[7]`); `quality/classes_covered`: how many of those it assigns so to the generated
  images (samples that look like other classes cover nothing).
- conditional models also get `quality/label_accuracy`: how often the classifier agrees with the label
  the generator was asked for.

`quality_bar(metrics)` is the lab's one bar for "recognisable samples" (QUALITY_BAR; docs/running.md and
the reproduction report's verdicts use it): each part relative to the run's own real images, so it holds
for any classifier scale and for runs on a subset of the classes.

The classifier learns from the dataset's training split when its files are there, else from the split
the run uses (`classifier_split` picks one explicitly). It trains once per (dataset, split, image size,
config), saying so on the console, and is cached under `$LAB_CACHE_DIR/quality/` (default
`~/.cache/lab/quality/`, or `cache_dir`), keyed by a hash of everything that shapes it; an unreadable
cache file is trained again and replaced.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

import core
from core import nn, optim
import core.functional as F
from core.serialization import CheckpointError
from gans.datasets import CLASS_NAMES, MissingDataError, Split, load_dataset, user_cache_dir

CLASSIFIER_VERSION = 3  # bump when the classifier's architecture or training changes: invalidates caches


@dataclass
class QualityConfig:
    enabled: bool = True
    samples: int = 2000  # real and generated images compared
    # the split the classifier learns from (null: train when its files are there, else the run's split)
    classifier_split: Optional[Split] = None
    classifier_limit: Optional[int] = None  # learn from the first N images only (quick tests)
    classifier_epochs: int = 1
    cache_dir: Optional[str] = None  # default: $LAB_CACHE_DIR/quality or ~/.cache/lab/quality
    collapse_ratio: float = 0.5
    every: Optional[int] = None  # epochs between evaluations during training; None: about 10 per run; 0: only at the end

    def validate(self):
        if self.samples < 2:
            raise ValueError(f"model.quality.samples must be at least 2 to estimate a covariance, got {self.samples}")
        if self.classifier_epochs < 1:
            raise ValueError(f"model.quality.classifier_epochs must be positive, got {self.classifier_epochs}")
        if not 0 < self.collapse_ratio <= 1:
            raise ValueError(f"model.quality.collapse_ratio must be in (0, 1], got {self.collapse_ratio}")
        if self.every is not None and self.every < 0:
            raise ValueError(f"model.quality.every must be >= 0 (0: only at the end) or null (about 10 per run), "
                             f"got {self.every}")


class Classifier(nn.Module):
    """conv3×3(16) → ReLU → maxpool2 → conv3×3(32) → ReLU → maxpool2 → Linear(64) → ReLU → Linear(classes)."""

    def __init__(self, channels: int, image_hw, n_classes: int, generator=None):
        super().__init__()
        h, w = (n // 4 for n in image_hw)
        if min(h, w) < 1:
            raise ValueError(f"the quality classifier needs images of at least 4×4 pixels, got {tuple(image_hw)}")
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding="same", generator=generator), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding="same", generator=generator), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * h * w, 64, generator=generator), nn.ReLU())
        self.head = nn.Linear(64, n_classes, generator=generator)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


def classifier_key(dataset: dict, quality: QualityConfig, image_shape, split: str = "train") -> str:
    """Hash of everything that determines the classifier trained on `split`."""
    spec = {"version": CLASSIFIER_VERSION, "dataset": dataset["name"], "shape": list(image_shape),
            "image_size": dataset.get("image_size"), "split": split,
            "limit": quality.classifier_limit, "epochs": quality.classifier_epochs}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """$LAB_CACHE_DIR/quality, else the platform's user cache directory for the lab: never the data
    directory, which may be read-only."""
    return (Path(os.environ["LAB_CACHE_DIR"]).expanduser() if os.environ.get("LAB_CACHE_DIR")
            else user_cache_dir()) / "quality"


def classifier_splits(dataset: dict, quality: QualityConfig) -> list:
    """The splits the classifier may learn from, preferred first."""
    if quality.classifier_split is not None:
        return [quality.classifier_split]
    return list(dict.fromkeys(["train", dataset.get("split") or "train"]))


def get_classifier(dataset: dict, quality: QualityConfig, image_shape, device="cpu", console=None) -> Classifier:
    """The cached classifier for a dataset config (`name`, `root`, `image_size`, `split`, ...) and image
    shape (C, H, W), trained first if needed on the first split of `classifier_splits` whose files are
    there; `console(line)` says so before training. It sees every class, whatever classes the model trains
    on. MissingDataError (naming the missing files) when no split can be had."""
    name = dataset["name"]
    cache = Path(quality.cache_dir or default_cache_dir()).expanduser()
    n_classes = len(CLASS_NAMES[name])
    model = Classifier(image_shape[0], image_shape[1:], n_classes, generator=core.Generator(0)).to(device)
    missing = None
    for split in classifier_splits(dataset, quality):
        path = cache / f"{name}-{classifier_key(dataset, quality, image_shape, split)}.ckpt"
        stale = ""
        if path.exists():
            try:
                model.load_state_dict(core.load(path)["model"])
                return model.eval()
            except (CheckpointError, KeyError, ValueError) as e:
                stale = f" (the cached file was unreadable: {str(e).splitlines()[0]})"
        try:
            images, labels = load_dataset(name, root=dataset.get("root"), split=split, normalize="01",
                                          image_size=dataset.get("image_size"), limit=quality.classifier_limit,
                                          download=dataset.get("download", True))
        except MissingDataError as e:
            missing = missing or e  # the preferred split's missing file is the one to name
            continue
        epochs = classifier_epochs(quality, len(images))
        if console is not None:
            console(f"quality: training the sample classifier on {name}/{split} ({len(images):,} images, "
                    f"{epochs} epoch{'s' if epochs > 1 else ''}), cached at {path}{stale}")
        train_classifier(model, images, labels, epochs)
        path.parent.mkdir(parents=True, exist_ok=True)
        core.save({"model": model.state_dict(), "train_accuracy": accuracy(model, images, labels)}, path)
        return model.eval()
    raise missing


MIN_CLASSIFIER_STEPS = 150  # small datasets (8×8 digits: 22 batches an epoch) get more epochs to reach it


def classifier_epochs(quality: QualityConfig, n_images: int, batch_size: int = 64) -> int:
    """`quality.classifier_epochs`, or more where that many epochs would be under MIN_CLASSIFIER_STEPS updates."""
    per_epoch = max(n_images // batch_size, 1)
    return max(quality.classifier_epochs, -(-MIN_CLASSIFIER_STEPS // per_epoch))


def train_classifier(model: Classifier, images: np.ndarray, labels: np.ndarray, epochs: int, batch_size: int = 64,
                     seed: int = 0):
    """Adam(3e-3) on cross-entropy, on the model's device; its own random streams, so training it never
    disturbs a run's."""
    device = next(model.parameters()).device
    rng = np.random.default_rng(seed)
    opt = optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(images))
        for start in range(0, len(images) - batch_size + 1, batch_size):
            index = order[start:start + batch_size]
            loss = F.cross_entropy(model(core.tensor(images[index], device=device)),
                                   core.tensor(labels[index], device=device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def to_unit_range(images, normalize: str) -> np.ndarray:
    """Images (Tensor or array) in a dataset's value range ("01" or "tanh") -> numpy in [0, 1]."""
    array = images.detach().numpy() if isinstance(images, core.Tensor) else np.asarray(images)
    return (array + 1) / 2 if normalize == "tanh" else array


def _in_batches(model, fn, images, batch_size=500):
    device = next(model.parameters()).device
    with core.no_grad():
        return np.concatenate([fn(core.tensor(images[i:i + batch_size], device=device)).numpy()
                               for i in range(0, len(images), batch_size)])


def accuracy(model: Classifier, images: np.ndarray, labels: np.ndarray) -> float:
    return float((_in_batches(model, model, images).argmax(1) == labels).mean())


def frechet_distance(mu1, cov1, mu2, cov2, use_scipy: Optional[bool] = None) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2) (float64); see the module doc for the method."""
    mu1, mu2, cov1, cov2 = (np.asarray(a, dtype=np.float64) for a in (mu1, mu2, cov1, cov2))
    diff = mu1 - mu2
    trace_sqrt = None
    if use_scipy is not False:
        try:
            from scipy.linalg import sqrtm
        except ImportError:
            if use_scipy:
                raise
        else:
            with warnings.catch_warnings():  # singular covariances (dead feature units) are expected
                warnings.simplefilter("ignore")
                root = sqrtm(cov1 @ cov2)
            if np.all(np.isfinite(root)):
                trace_sqrt = float(np.real(np.trace(root)))
    if trace_sqrt is None:
        trace_sqrt = trace_sqrt_product(cov1, cov2)
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt)


def trace_sqrt_product(cov1, cov2) -> float:
    """tr((cov1 cov2)^½) for symmetric PSD matrices, via eigenvalues of cov1^½ cov2 cov1^½."""
    values, vectors = np.linalg.eigh(cov1)
    root1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    inner = root1 @ cov2 @ root1
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum())


def label_entropy(predicted: np.ndarray, n_classes: int) -> float:
    p = np.bincount(predicted, minlength=n_classes) / len(predicted)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum()) + 0.0  # + 0.0 turns the -0.0 of a single class into 0.0


def classifier_score(probabilities: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) ‖ p(y))) of per-image class probabilities (n, classes)."""
    p = np.clip(probabilities.astype(np.float64), 1e-12, 1.0)
    marginal = p.mean(0, keepdims=True)
    return float(np.exp((p * (np.log(p) - np.log(marginal))).sum(1).mean()))


def covered(predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Mask of the classes predicted for at least a quarter of their uniform share of the images."""
    return np.bincount(predicted, minlength=n_classes) / len(predicted) >= 0.25 / n_classes


def feature_stats(features: np.ndarray):
    return features.mean(0), np.cov(features, rowvar=False)


def evaluate_quality(generate, data, quality: QualityConfig, device="cpu", seed: int = 0,
                     conditional: bool = False, classifier: Optional[Classifier] = None) -> dict:
    """Compare `quality.samples` generated images with as many real ones (random, from `data`, a
    `gans.common.Data`), on the features of the classifier of `data.dataset`.

    generate(n, rng) returns n images in the data's value range (Tensor or array), or (images, labels)
    when `conditional`; rng is a `core.Generator` for its noise, seeded from `seed`."""
    classifier = get_classifier(data.dataset, quality, data.shape, device)
    n = min(quality.samples, len(data))
    real_index = np.random.default_rng(seed).choice(len(data), n, replace=False)
    real = to_unit_range(data.images[real_index], data.normalize).astype(np.float32)
    rng = core.Generator(seed)
    chunks, asked = [], []
    with core.no_grad():
        for start in range(0, quality.samples, 500):
            out = generate(min(500, quality.samples - start), rng)
            images, labels = out if conditional else (out, None)
            chunks.append(to_unit_range(images, data.normalize).astype(np.float32))
            if conditional:
                asked.append(np.asarray(labels))
    fake = np.concatenate(chunks)
    real_features = _in_batches(classifier, classifier.features, real).astype(np.float64)
    fake_features = _in_batches(classifier, classifier.features, fake).astype(np.float64)
    fake_probabilities = _in_batches(classifier, lambda x: F.softmax(classifier(x), axis=1), fake)
    real_probabilities = _in_batches(classifier, lambda x: F.softmax(classifier(x), axis=1), real)
    fake_predicted, real_predicted = fake_probabilities.argmax(1), real_probabilities.argmax(1)
    entropy = label_entropy(fake_predicted, data.n_classes)
    real_entropy = label_entropy(real_predicted, data.n_classes)
    real_mean, real_cov = feature_stats(real_features)
    distance = frechet_distance(real_mean, real_cov, *feature_stats(fake_features))
    real_classes = covered(real_predicted, data.n_classes)
    metrics = {
        "quality/frechet_distance": distance,
        "quality/frechet_distance_relative": distance / max(float(np.trace(real_cov)), 1e-12),
        "quality/class_entropy": entropy,
        "quality/class_entropy_real": real_entropy,
        "quality/mode_collapse": bool(math.exp(entropy) < quality.collapse_ratio * math.exp(real_entropy)),
        "quality/score": classifier_score(fake_probabilities),
        "quality/score_real": classifier_score(real_probabilities),
        "quality/classes_covered": int((covered(fake_predicted, data.n_classes) & real_classes).sum()),
        "quality/classes_covered_real": int(real_classes.sum()),
    }
    if conditional:
        metrics["quality/label_accuracy"] = float((fake_predicted == np.concatenate(asked)).mean())
    return metrics


# The bar for "recognisable samples", each part relative to the run's own real images (docs/reproduction.md
# lists what real images, noise, the mean image and collapsed generators score against it).
QUALITY_BAR = {
    "score": 0.6,  # quality/score at least this fraction of quality/score_real
    "classes_covered": 0.9,  # quality/classes_covered at least this fraction of quality/classes_covered_real
    "frechet_distance_relative": 0.5,  # quality/frechet_distance_relative at most this
}
BAR_METRICS = ("quality/score", "quality/score_real", "quality/classes_covered", "quality/classes_covered_real",
               "quality/frechet_distance_relative")


def describe_bar(bar: Optional[dict] = None) -> str:
    """The bar in words, for the docs and the report."""
    bar = merged_bar(bar)
    return (f"a quality score at least {bar['score']:.0%} of the real images' (`quality/score` ≥ "
            f"{bar['score']:g} × `quality/score_real`), at least {bar['classes_covered']:.0%} of the real images' "
            f"classes covered (`quality/classes_covered` ≥ {bar['classes_covered']:g} × "
            f"`quality/classes_covered_real`: 9 of 10 for MNIST, the one class of a single-class run) and a relative "
            f"Fréchet distance of at most {bar['frechet_distance_relative']:g} (`quality/frechet_distance_relative`)")


def merged_bar(bar: Optional[dict] = None) -> dict:
    """QUALITY_BAR updated by `bar` (a preset's `meta.quality_bar`); ValueError naming an unknown part."""
    unknown = sorted(set(bar or {}) - set(QUALITY_BAR))
    if unknown:
        raise ValueError(f"unknown quality bar part(s) {', '.join(unknown)}; the parts are {', '.join(QUALITY_BAR)}")
    return {**QUALITY_BAR, **(bar or {})}


def quality_bar(metrics: dict, bar: Optional[dict] = None):
    """(passed, reason) of sample-quality metrics (one run's, or means over seeds) against QUALITY_BAR
    updated by `bar`. passed is None when the metrics lack a part the bar needs (scored before it, or
    with model.quality disabled): the reason names what is missing."""
    bar = merged_bar(bar)
    missing = [key for key in BAR_METRICS if metrics.get(key) is None]
    if missing:
        return None, f"no {', '.join(missing)} to judge the samples by"
    score, score_real = metrics["quality/score"], metrics["quality/score_real"]
    classes, classes_real = metrics["quality/classes_covered"], metrics["quality/classes_covered_real"]
    relative = metrics["quality/frechet_distance_relative"]
    checks = [(score >= bar["score"] * score_real,
               f"score {score:.3g} {{}} {bar['score']:g} × real {score_real:.3g}", "≥", "<"),
              (classes >= bar["classes_covered"] * classes_real,
               f"{classes:g} of {classes_real:g} classes covered, {{}} {bar['classes_covered']:g} × {classes_real:g}",
               "≥", "<"),
              (relative <= bar["frechet_distance_relative"],
               f"relative Fréchet distance {relative:.3g} {{}} {bar['frechet_distance_relative']:g}", "≤", ">")]
    passed = all(ok for ok, *_ in checks)
    parts = ", ".join(text.format(good if ok else bad) for ok, text, good, bad in checks)
    return passed, f"samples {'pass' if passed else 'fail'} the quality bar ({parts})"
