import numpy as np
import torch
from torch import nn

from clsp.evaluation.features import extract_features
from clsp.evaluation.linear import topk_accuracy, train_linear_probe


def clusters(seed: int, n: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 16, generator=torch.Generator().manual_seed(99)) * scale
    labels = torch.randint(0, 4, (n,), generator=gen)
    return centres[labels] + torch.randn(n, 16, generator=gen), labels


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
