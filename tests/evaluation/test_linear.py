import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clsp.evaluation.linear import topk_accuracy, train_linear_probe
from clsp.features import extract_features


def clusters(seed: int, n: int, scale: float, dim: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, dim, generator=torch.Generator().manual_seed(99)) * scale
    labels = torch.randint(0, 4, (n,), generator=gen)
    return centres[labels] + torch.randn(n, dim, generator=gen), labels


def probe(train, train_labels, test, test_labels, flipped=None):
    return train_linear_probe(
        train, train_labels, test, test_labels, train_features_flipped=flipped, epochs=20, lr=0.5,
        milestones=(12, 16), batch_size=64,
    )  # fmt: skip


def test_separable_clusters_reach_100_and_random_labels_stay_at_chance() -> None:
    train, train_labels = clusters(0, 400, scale=4.0)
    test, test_labels = clusters(1, 200, scale=4.0)
    result = probe(train, train_labels, test, test_labels, flipped=train + 0.01)
    assert result.top1 == 100.0 and result.top5 == 100.0
    assert result.train_loss[-1] < result.train_loss[0]
    noise_labels = torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(3))
    chance = probe(train, train_labels, test, noise_labels)
    assert 10 < chance.top1 < 40  # chance is 25%


def gradient_descent(train, train_labels, test, test_labels, epochs, lr, milestones, seed=0):
    """method.md 4.2 by hand with one batch per epoch: a default-initialised Linear, plain gradient steps (no
    momentum, no decay) at lr x 0.1 per milestone passed. Returns the loss before each epoch's step and the test
    top-1 after it."""
    torch.manual_seed(seed)
    head = nn.Linear(train.shape[1], int(max(train_labels.max(), test_labels.max())) + 1)
    losses, top1 = [], []
    for epoch in range(epochs):
        loss = F.cross_entropy(head(train), train_labels)
        head.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in head.parameters():
                p -= lr * 0.1 ** sum(epoch >= m for m in milestones) * p.grad
            top1.append(topk_accuracy(head(test), test_labels, 1))
        losses.append(loss.item())
    return losses, top1


def full_batch_probe(train, train_labels, test, test_labels, epochs, lr, milestones):
    return train_linear_probe(
        train, train_labels, test, test_labels, train_features_flipped=None, epochs=epochs, lr=lr,
        milestones=milestones, batch_size=len(train), show_progress=False,
    )  # fmt: skip


def test_lr_drops_tenfold_at_each_milestone_epoch() -> None:
    train, train_labels = clusters(0, 200, scale=1.0)
    test, test_labels = clusters(1, 200, scale=1.0)
    result = full_batch_probe(train, train_labels, test, test_labels, epochs=12, lr=0.5, milestones=(4, 8))
    expected, _ = gradient_descent(train, train_labels, test, test_labels, 12, 0.5, (4, 8))
    torch.testing.assert_close(torch.tensor(result.train_loss), torch.tensor(expected), rtol=1e-5, atol=0)
    for other in ((), (3, 8), (5, 8), (4, 9)):  # the data tells these schedules apart
        losses, _ = gradient_descent(train, train_labels, test, test_labels, 12, 0.5, other)
        assert max(abs(a - b) for a, b in zip(losses, expected, strict=True)) > 1e-4, other


def test_minibatch_steps_with_flips_equal_autograd_and_torch_sgd() -> None:
    """The hand-written gradient against autograd + torch.optim.SGD + MultiStepLR on the same draws (epoch order,
    flips): batches of 48 leave a short last batch of 8, whose mean is over 8."""
    train, labels = clusters(4, 200, scale=1.0)
    flipped = train.flip(1)
    test, test_labels = clusters(5, 100, scale=1.0)
    epochs, lr, milestones, batch_size, seed = 6, 0.5, (2, 4), 48, 3
    result = train_linear_probe(
        train, labels, test, test_labels, train_features_flipped=flipped, epochs=epochs, lr=lr,
        milestones=milestones, batch_size=batch_size, seed=seed, show_progress=False,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = nn.Linear(train.shape[1], 4)
    optimizer = torch.optim.SGD(head.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=0.1)
    expected = []
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=generator)
        features = torch.where((torch.rand(len(train), generator=generator) < 0.5)[:, None], flipped, train)
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(head(features[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        schedule.step()
        expected.append(total / len(order))
    torch.testing.assert_close(torch.tensor(result.train_loss), torch.tensor(expected), rtol=1e-5, atol=0)
    with torch.no_grad():
        assert result.top1 == topk_accuracy(head(test), test_labels, 1)


def test_the_reported_accuracy_is_the_final_epochs_not_the_best() -> None:
    train, labels = clusters(2, 40, scale=0.5, dim=32)
    labels[:13] = (labels[:13] + 1) % 4  # a third of the labels wrong: test accuracy peaks early, then falls
    test, test_labels = clusters(3, 400, scale=0.5, dim=32)
    result = full_batch_probe(train, labels, test, test_labels, epochs=20, lr=1.0, milestones=(14,))
    _, top1 = gradient_descent(train, labels, test, test_labels, 20, 1.0, (14,))
    assert max(top1) > top1[-1] + 5  # best epoch and final epoch differ here
    assert result.top1 == pytest.approx(top1[-1], abs=0.5)


def test_each_sample_is_flipped_with_probability_one_half_per_epoch() -> None:
    """The class shows in dims 0-7 of the plain features and in dims 8-15 of the mirrored ones, so only a probe
    that sees both kinds within one epoch classifies a test set of both kinds."""

    def plain_and_mirrored(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        signal, labels = clusters(seed, n, scale=3.0, dim=8)
        noise = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed + 100))
        return torch.cat([signal, noise], 1), torch.cat([noise, signal], 1), labels

    plain, mirrored, labels = plain_and_mirrored(0, 400)
    test_plain, test_mirrored, test_labels = plain_and_mirrored(1, 200)
    test, test_labels = torch.cat([test_plain, test_mirrored]), torch.cat([test_labels, test_labels])

    def probe_one_epoch(features: torch.Tensor, flipped: torch.Tensor | None) -> float:
        return train_linear_probe(
            features, labels, test, test_labels, train_features_flipped=flipped, epochs=1, lr=0.5, milestones=(),
            batch_size=16, show_progress=False,
        ).top1  # fmt: skip

    assert probe_one_epoch(plain, mirrored) > 95
    assert probe_one_epoch(plain, None) < 70 and probe_one_epoch(mirrored, None) < 70  # never or always flipped


def test_topk_accuracy_by_hand() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.5], [0.2, 0.3, 0.4]])
    labels = torch.tensor([1, 2, 0])
    assert abs(topk_accuracy(logits, labels, 1) - 100 / 3) < 1e-4
    assert abs(topk_accuracy(logits, labels, 2) - 200 / 3) < 1e-4
    assert topk_accuracy(logits, labels, 5) == 100.0


def test_features_of_a_frozen_encoder_flip_and_normalise() -> None:
    encoder = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    encoder.train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    images = np.random.default_rng(0).integers(0, 256, (10, 6, 6, 3), dtype=np.uint8)
    feats = extract_features(encoder, images, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), batch_size=4)
    flipped = extract_features(encoder, images, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), batch_size=3, hflip=True)
    assert not encoder.training  # BatchNorm used its running statistics, which did not move
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(value, before[key])
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        torch.testing.assert_close(feats, encoder(x))
        torch.testing.assert_close(flipped, encoder(x.flip(3)))
