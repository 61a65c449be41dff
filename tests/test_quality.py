"""The sample-quality metric (gans/quality.py): Fréchet distance, label entropy, the cached classifier,
and the whole score on real MNIST images, noise and a collapsed "generator"."""
import math
from pathlib import Path

import numpy as np
import pytest

import core
from gans import quality
from gans.common import load_data
from gans.datasets import MissingDataError
from gans.quality import QualityConfig, evaluate_quality, frechet_distance, label_entropy, quality_bar


def random_spd(rng, n):
    a = rng.normal(size=(n, n))
    return a @ a.T / n + 0.1 * np.eye(n)


# ----- Fréchet distance -----
@pytest.mark.parametrize("use_scipy", [True, False])
def test_frechet_distance_closed_forms(use_scipy):
    rng = np.random.default_rng(0)
    mu, cov = rng.normal(size=6), random_spd(rng, 6)
    assert frechet_distance(mu, cov, mu, cov, use_scipy) == pytest.approx(0.0, abs=1e-9)
    # N(0, 1) vs N(1, 4): (0 − 1)² + 1 + 4 − 2·sqrt(1·4) = 2
    assert frechet_distance([0.0], [[1.0]], [1.0], [[4.0]], use_scipy) == pytest.approx(2.0, rel=1e-12)
    # diagonal covariances: Σ (μ1 − μ2)² + Σ (σ1 − σ2)²
    s1, s2, m1, m2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5), rng.normal(size=5), rng.normal(size=5)
    expected = ((m1 - m2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert frechet_distance(m1, np.diag(s1 ** 2), m2, np.diag(s2 ** 2), use_scipy) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_scipy_and_eigen_methods_agree_on_general_covariances():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    cov1, cov2 = random_spd(rng, 20), random_spd(rng, 20)
    with_scipy = frechet_distance(mu1, cov1, mu2, cov2, use_scipy=True)
    assert frechet_distance(mu1, cov1, mu2, cov2, use_scipy=False) == pytest.approx(with_scipy, rel=1e-8)
    singular = np.diag([1.0, 2.0, 0.0])  # a dead feature: zero variance in both
    assert frechet_distance(np.zeros(3), singular, np.zeros(3), singular * 4, use_scipy=True) == pytest.approx(
        frechet_distance(np.zeros(3), singular, np.zeros(3), singular * 4, use_scipy=False), abs=1e-6)


def test_label_entropy():
    assert label_entropy(np.arange(100) % 10, 10) == pytest.approx(math.log(10))
    assert label_entropy(np.array([0, 1, 0, 1]), 10) == pytest.approx(math.log(2))
    single = label_entropy(np.full(7, 3), 10)
    assert single == 0.0 and math.copysign(1.0, single) == 1.0


# ----- the classifier and the score on real data -----
@pytest.fixture
def mnist_data(mnist_root):
    """The first 3,000 test images train the classifier; images 3,000-6,000 serve as the real data."""
    data = load_data({"name": "mnist", "root": mnist_root, "split": "test", "normalize": "01"})
    data.images, data.labels = data.images[3000:6000], data.labels[3000:6000]
    return data


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return QualityConfig(samples=1000, classifier_split="test", classifier_limit=3000, classifier_epochs=2,
                         cache_dir=str(tmp_path_factory.mktemp("cache")))


def test_classifier_is_trained_once_then_loaded_from_the_cache(mnist_data, settings, monkeypatch):
    first = quality.get_classifier(mnist_data.dataset, settings, mnist_data.shape)
    files = list(Path(settings.cache_dir).glob("mnist-*.ckpt"))
    assert len(files) == 1
    assert quality.accuracy(first, mnist_data.images, mnist_data.labels) > 0.9  # on images it never saw

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded")

    monkeypatch.setattr(quality, "train_classifier", no_training)
    again = quality.get_classifier(mnist_data.dataset, settings, mnist_data.shape)
    x = core.tensor(mnist_data.images[:50])
    with core.no_grad():
        np.testing.assert_array_equal(again.features(x).numpy(), first.features(x).numpy())
    other = QualityConfig(classifier_split="test", classifier_limit=3000, classifier_epochs=3)
    assert quality.classifier_key(mnist_data.dataset, other, mnist_data.shape, "test") != files[0].stem.split("-", 1)[1]


def test_classifier_learns_from_the_split_that_is_there_says_so_once_and_rebuilds_a_corrupt_cache(mnist_root,
                                                                                                  tmp_path):
    """No split named: the train files are missing, so the run's test split teaches it; a console line says
    so (only when it trains); a damaged cache file is trained again and replaced."""
    test_only = tmp_path / "data" / "mnist"
    test_only.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (test_only / name).symlink_to(Path(mnist_root) / "mnist" / name)
    dataset = {"name": "mnist", "root": str(tmp_path / "data"), "split": "test"}
    settings = QualityConfig(classifier_limit=640, cache_dir=str(tmp_path / "cache"))
    lines = []
    first = quality.get_classifier(dataset, settings, (1, 28, 28), console=lines.append)
    (path,) = Path(settings.cache_dir).glob("mnist-*.ckpt")
    key = quality.classifier_key(dataset, settings, (1, 28, 28), "test")
    assert path.name == f"mnist-{key}.ckpt"
    assert lines == [f"quality: training the sample classifier on mnist/test (640 images, 15 epochs), cached at {path}"]

    quality.get_classifier(dataset, settings, (1, 28, 28), console=lines.append)
    assert len(lines) == 1  # loaded from the cache, silently

    path.write_bytes(path.read_bytes()[:100])  # a cache file cut short
    again = quality.get_classifier(dataset, settings, (1, 28, 28), console=lines.append)
    assert len(lines) == 2 and "the cached file was unreadable" in lines[1] and "truncated" in lines[1]
    core.load(path)  # replaced by an intact file
    x = core.tensor(load_data({**dataset, "normalize": "01", "limit": 20}).images)
    with core.no_grad():  # trained again from the same seed on the same images: the same classifier
        np.testing.assert_array_equal(again(x).numpy(), first(x).numpy())

    with pytest.raises(MissingDataError, match="missing train-images"):  # a split named explicitly is required
        quality.get_classifier(dataset, QualityConfig(classifier_split="train", cache_dir=settings.cache_dir),
                               (1, 28, 28))


def from_pool(images, labels=None):
    """A stand-in generator drawing (with rng) from a fixed pool of images."""
    def generate(n, rng):
        index = rng.integers(0, len(images), (n,)).numpy()
        return images[index] if labels is None else (images[index], labels[index])
    return generate


def test_quality_of_real_images_noise_and_a_collapsed_generator(mnist_data, mnist_root, settings):
    held_out = load_data({"name": "mnist", "root": mnist_root, "split": "test", "normalize": "01", "limit": 9000})
    real_pool, real_labels = held_out.images[6000:], held_out.labels[6000:]
    real = evaluate_quality(from_pool(real_pool), mnist_data, settings)
    noise = evaluate_quality(lambda n, rng: rng.uniform((n, 1, 28, 28)), mnist_data, settings)
    ones = evaluate_quality(from_pool(real_pool[real_labels == 1]), mnist_data, settings)
    assert real["quality/frechet_distance"] < 0.05 * noise["quality/frechet_distance"]
    assert real["quality/frechet_distance"] < 0.1 * ones["quality/frechet_distance"]
    assert real["quality/class_entropy"] == pytest.approx(real["quality/class_entropy_real"], abs=0.1)
    assert real["quality/class_entropy_real"] > 2.2  # ten nearly balanced classes: log 10 = 2.30
    assert not real["quality/mode_collapse"]
    assert ones["quality/class_entropy"] < 0.5 and ones["quality/mode_collapse"]
    # the score: near the number of classes for real digits, near 1 for one class; coverage counts classes
    assert real["quality/score"] > 7 and real["quality/score"] == pytest.approx(real["quality/score_real"], rel=0.1)
    assert real["quality/classes_covered"] == real["quality/classes_covered_real"] == 10
    assert ones["quality/score"] < 1.5 and ones["quality/classes_covered"] <= 2
    assert noise["quality/score"] < 0.5 * real["quality/score"]
    # the one bar: real digits pass it; noise, one class and one image repeated fail it
    mean_image = evaluate_quality(lambda n, rng: np.repeat(real_pool[:1], n, 0), mnist_data, settings)
    assert quality_bar(real)[0] is True
    for fails in (noise, ones, mean_image):
        assert quality_bar(fails)[0] is False

    conditional = evaluate_quality(from_pool(real_pool, real_labels), mnist_data, settings, conditional=True)
    assert conditional["quality/label_accuracy"] > 0.85
    shuffled = evaluate_quality(from_pool(real_pool, np.roll(real_labels, 1)), mnist_data, settings, conditional=True)
    assert shuffled["quality/label_accuracy"] < 0.3


def test_a_single_class_run_is_judged_against_its_own_real_class(mnist_root, settings):
    """dataset.classes=[7]: the real sevens score about 1 (one class), as does noise; the classes covered
    and the relative Fréchet distance tell them apart."""
    sevens = load_data({"name": "mnist", "root": mnist_root, "split": "test", "normalize": "01", "classes": [7]})
    pool = sevens.images[:500]
    sevens.images = sevens.images[500:]
    full = load_data({"name": "mnist", "root": mnist_root, "split": "test", "normalize": "01", "limit": 3000})
    real = evaluate_quality(from_pool(pool), sevens, settings)
    assert real["quality/classes_covered"] == real["quality/classes_covered_real"] == 1
    assert real["quality/score_real"] < 1.5 and quality_bar(real)[0] is True
    noise = evaluate_quality(lambda n, rng: rng.uniform((n, 1, 28, 28)), sevens, settings)
    ones = evaluate_quality(from_pool(full.images[full.labels == 1]), sevens, settings)
    one_seven = evaluate_quality(lambda n, rng: np.repeat(pool[:1], n, 0), sevens, settings)
    assert ones["quality/classes_covered"] == 0  # digits, but not the run's
    assert one_seven["quality/frechet_distance_relative"] > 1 > 2 * real["quality/frechet_distance_relative"]
    for fails in (noise, ones, one_seven):
        assert quality_bar(fails)[0] is False


def measured(score, classes, relative, score_real=8.45, classes_real=10):
    return {"quality/score": score, "quality/score_real": score_real, "quality/classes_covered": classes,
            "quality/classes_covered_real": classes_real, "quality/frechet_distance_relative": relative}


def test_quality_bar_parts_overrides_and_missing_metrics():
    assert quality_bar(measured(7.0, 10, 0.2)) == (True, "samples pass the quality bar (score 7 ≥ 0.6 × real 8.45, "
                                                         "10 of 10 classes covered, ≥ 0.9 × 10, relative Fréchet "
                                                         "distance 0.2 ≤ 0.5)")
    passed, reason = quality_bar(measured(4.0, 8, 0.7))
    assert not passed and "score 4 < 0.6 × real 8.45" in reason and "8 of 10 classes covered, < 0.9 × 10" in reason
    assert "distance 0.7 > 0.5" in reason
    assert quality_bar(measured(7.0, 9, 0.2))[0] and not quality_bar(measured(5.0, 10, 0.2))[0]  # 5 < 5.07
    assert quality_bar(measured(5.0, 10, 0.2), {"score": 0.5})[0]  # a preset's meta.quality_bar
    assert quality_bar(measured(1.0, 1, 0.1, score_real=1.1, classes_real=1))[0]  # a single-class run
    assert quality_bar({"quality/frechet_distance": 80.0}) == (
        None, "no quality/score, quality/score_real, quality/classes_covered, quality/classes_covered_real, "
              "quality/frechet_distance_relative to judge the samples by")
    with pytest.raises(ValueError, match="unknown quality bar part.*frechet_distance; the parts are score, "):
        quality_bar(measured(7.0, 10, 0.2), {"frechet_distance": 200})


def test_quality_on_tanh_images_is_the_same_as_on_unit_images(mnist_data, settings):
    tanh_data = load_data({"name": "mnist", "root": mnist_data.dataset["root"], "split": "test", "normalize": "tanh"})
    tanh_data.images = tanh_data.images[3000:6000]
    unit = evaluate_quality(from_pool(mnist_data.images[:1000]), mnist_data, settings)
    tanh = evaluate_quality(from_pool(tanh_data.images[:1000]), tanh_data, settings)
    assert tanh["quality/frechet_distance"] == pytest.approx(unit["quality/frechet_distance"], rel=1e-4)
