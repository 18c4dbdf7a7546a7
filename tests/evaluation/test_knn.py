import math

import torch

from clsp.evaluation.knn import knn_accuracy


def naive_knn(train, train_labels, test, test_labels, k, temperature):
    """One test sample at a time, with Python loops over neighbours: the definition, written out."""
    correct = 0
    for x, y in zip(test, test_labels, strict=True):
        sims = []
        for f, label in zip(train, train_labels, strict=True):
            cos = float((x @ f) / (x.norm() * f.norm()))
            sims.append((cos, int(label)))
        sims.sort(key=lambda s: -s[0])
        scores = {}
        for cos, label in sims[:k]:
            scores[label] = scores.get(label, 0.0) + math.exp(cos / temperature)
        correct += max(scores, key=scores.get) == int(y)
    return 100.0 * correct / len(test)


def test_equals_a_naive_loop_on_random_data() -> None:
    gen = torch.Generator().manual_seed(0)
    train, test = torch.randn(120, 8, generator=gen), torch.randn(37, 8, generator=gen)
    train_labels, test_labels = torch.randint(0, 4, (120,), generator=gen), torch.randint(0, 4, (37,), generator=gen)
    ours = knn_accuracy(train, train_labels, test, test_labels, (1, 5, 20), temperature=0.07, chunk_size=10)
    for k in (1, 5, 20):
        assert ours[k] == naive_knn(train, train_labels, test, test_labels, k, 0.07)


def test_separable_clusters_and_random_labels() -> None:
    gen = torch.Generator().manual_seed(1)
    centres = torch.randn(5, 32, generator=gen) * 5
    labels = torch.randint(0, 5, (600,), generator=gen)
    features = centres[labels] + torch.randn(600, 32, generator=gen) * 0.5
    acc = knn_accuracy(features[:500], labels[:500], features[500:], labels[500:], (5, 20))
    assert acc[5] == 100.0 and acc[20] == 100.0
    random_labels = torch.randint(0, 5, (600,), generator=gen)
    noise = torch.randn(600, 32, generator=gen)
    chance = knn_accuracy(noise[:500], random_labels[:500], noise[500:], random_labels[500:], (20,))
    assert 5 < chance[20] < 35  # chance is 20%
