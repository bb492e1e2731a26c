"Solutions to lesson 08's exercises, and classic mistakes the checks must catch."
import torch

def _sqrtm(m):
    w, v = torch.linalg.eigh(m)
    return v @ torch.diag(w.clamp(min=0).sqrt()) @ v.T

def fid_from_stats(mu1, sigma1, mu2, sigma2):
    r1 = _sqrtm(sigma1)
    cross = torch.trace(_sqrtm(r1 @ sigma2 @ r1))
    return float(torch.sum((mu1 - mu2) ** 2) + torch.trace(sigma1) + torch.trace(sigma2) - 2 * cross)

def judged_accuracy(logits, labels):
    return (logits.argmax(dim=1) == labels).float().mean().item()

SOLUTIONS = {'fid_from_stats': fid_from_stats, 'judged_accuracy': judged_accuracy}

def _no_root(mu1, sigma1, mu2, sigma2):
    return float((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * (sigma1 @ sigma2).trace())

def _roots_apart(mu1, sigma1, mu2, sigma2):
    return float((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * (_sqrtm(sigma1) @ _sqrtm(sigma2)).trace())

WRONG = [
    ('fid_from_stats', _no_root, 'it gives'),                                                            # no square root
    ('fid_from_stats', _roots_apart, 'it gives'),                                                        # √Σ1·√Σ2 ≠ (Σ1Σ2)^½
    ('fid_from_stats', lambda mu1, sigma1, mu2, sigma2: float((mu1 - mu2).norm() + sigma1.trace() + sigma2.trace()
                                                              - 2 * torch.trace(_sqrtm(_sqrtm(sigma1) @ sigma2 @ _sqrtm(sigma1)))),
     'it gives'),                                                                                        # the distance, not squared
    ('judged_accuracy', lambda logits, labels: (logits.argmax(0)[:len(labels)] == labels).float().mean().item(), 'raised'),   # argmax over the samples
    ('judged_accuracy', lambda logits, labels: (logits.argmax(1) == labels).sum().item(), 'it gives'),   # a count, not a share
]
