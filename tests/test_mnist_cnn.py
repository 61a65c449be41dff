"""End to end: a small CNN (Conv2d, MaxPool2d, Linear; Adam with a cosine schedule; cross-entropy) trained on
real MNIST digits.

The shared data holds the MNIST test set only: the first 8,000 images train, the last 2,000 are held out."""
import time

import numpy as np

import core
import core.functional as F
from core import nn, optim
from gans.datasets import load_dataset


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2),  # 28 -> 26 -> 13
        nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2),  # 13 -> 11 -> 5
        nn.Flatten(), nn.Linear(32 * 5 * 5, 64), nn.ReLU(), nn.Linear(64, 10))


def test_small_cnn_reaches_97_percent_on_held_out_mnist(mnist_root):
    images, labels = load_dataset("mnist", root=mnist_root, split="test")
    train_x, train_y = images[:8000], labels[:8000]
    test_x, test_y = core.tensor(images[8000:]), labels[8000:]
    core.manual_seed(0)
    model = small_cnn()
    epochs, batches = 4, len(train_x) // 64
    opt = optim.Adam(model.parameters(), lr=3e-3)
    schedule = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * batches)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in np.array_split(rng.permutation(len(train_x)), batches):
            loss = F.cross_entropy(model(core.tensor(train_x[batch])), core.tensor(train_y[batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    model.eval()
    with core.no_grad():
        predictions = np.concatenate([model(x).argmax(1).numpy() for x in test_x.split(500)])
    accuracy = (predictions == test_y).mean()
    print(f"held-out accuracy {accuracy:.4f} after {time.perf_counter() - start:.1f} s")
    assert accuracy >= 0.97
