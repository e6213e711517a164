"""Scaling laws from a sweep's points: L(N, D) fitted as Chinchilla's approach 3, the compute-optimal
size and tokens it implies for this workflow's depth family, and DeepSeek LLM's power laws of the
near-optimal learning rate and batch size in compute (scipy's L-BFGS; no library fits these).

N is the non-embedding parameters (Kaplan's; the embeddings of a 2,048-token vocabulary outweigh the
blocks of the smallest depths), D the training tokens, C the training FLOPs (FLOPs per token x D,
the output layer and attention included, as MFU counts them).
"""
import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize

from workflow_scripts.lib.model_shapes import WIDTH_PER_LAYER

HUBER_DELTA = 1e-3  # Chinchilla's: the fit follows the bulk of the points, not the odd diverged run
# Chinchilla's grid of starting points (a, b, e, alpha, beta), narrowed to the constants a sweep
# of small models reaches; a resample of the bootstrap starts from the full fit and a few of them.
STARTS = list(itertools.product([0.0, 4.0, 8.0, 12.0], [0.0, 4.0, 8.0, 12.0], [0.0, 1.0], [0.25, 0.6], [0.25, 0.6]))
BOOTSTRAP_STARTS = 2


@dataclass(frozen=True)
class LossLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta."""
    E: float
    A: float
    alpha: float
    B: float
    beta: float

    def loss(self, n, d):
        return self.E + self.A / np.power(n, self.alpha) + self.B / np.power(d, self.beta)

    def as_dict(self):
        return asdict(self)


def huber_objective(theta, log_n, log_d, log_loss):
    """Chinchilla's objective over (a, b, e, alpha, beta), A = exp(a), B = exp(b), E = exp(e), in
    log space, with its gradient (plain numpy: scipy.special's logsumexp and softmax took 4 times
    as long a call, over the thousands of calls of a fit and its bootstrap)."""
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    top = terms.max(axis=0)
    shares = np.exp(terms - top)
    total = shares.sum(axis=0)
    residual = top + np.log(total) - log_loss
    small = np.abs(residual) <= HUBER_DELTA
    value = np.where(small, 0.5 * residual ** 2, HUBER_DELTA * (np.abs(residual) - 0.5 * HUBER_DELTA)).sum()
    weights = shares / total * np.where(small, residual, HUBER_DELTA * np.sign(residual))
    gradient = [weights[0].sum(), weights[1].sum(), weights[2].sum(), -(weights[0] @ log_n), -(weights[1] @ log_d)]
    return value, np.array(gradient)


def fit_loss_law(n, d, loss, starts=STARTS):
    """The law of least Huber loss over L-BFGS runs from each start (Chinchilla approach 3)."""
    data = (np.log(n), np.log(d), np.log(loss))
    best = min((minimize(huber_objective, start, args=data, jac=True, method="L-BFGS-B") for start in starts),
               key=lambda result: result.fun)
    a, b, e, alpha, beta = best.x
    return LossLaw(E=math.exp(e), A=math.exp(a), alpha=alpha, B=math.exp(b), beta=beta)


def bootstrap_laws(n, d, loss, law, rounds, seed=0):
    """The law refitted on `rounds` resamples of the points (with replacement)."""
    rng = np.random.default_rng(seed)
    n, d, loss = map(np.asarray, (n, d, loss))
    start = [math.log(law.A), math.log(law.B), math.log(law.E), law.alpha, law.beta]
    laws = []
    for _ in range(rounds):
        pick = rng.integers(0, len(n), len(n))
        starts = [start] + [STARTS[k] for k in rng.choice(len(STARTS), BOOTSTRAP_STARTS, replace=False)]
        laws.append(fit_loss_law(n[pick], d[pick], loss[pick], starts))
    return laws


def interval(values, confidence=0.9):
    low, high = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return [float(low), float(high)]


def family_size(depth, vocab_size, seq_len):
    """(non-embedding parameters, training FLOPs per token) of the depth family (model_shapes.shape)
    at a real-valued depth, for the frontier's search."""
    width = WIDTH_PER_LAYER * depth
    blocks = depth * (4 * width * width + 3 * width * width * 8 / 3)
    non_embedding = blocks + (2 * depth + 1) * width
    return non_embedding, 6 * (blocks + width * vocab_size) + 12 * depth * width * seq_len


def compute_optimal(law, compute, vocab_size, seq_len, depths=np.arange(1.0, 64.0, 0.01)):
    """The depth of least predicted loss at `compute` FLOPs, with its N, D and loss."""
    n, flops_per_token = family_size(depths, vocab_size, seq_len)
    tokens = compute / flops_per_token
    losses = law.loss(n, tokens)
    best = int(np.argmin(losses))
    return {"compute": float(compute), "depth": float(depths[best]), "non_embedding_parameters": float(n[best]),
            "tokens": float(tokens[best]), "flops_per_token": float(flops_per_token[best]),
            "loss": float(losses[best])}


def power_law(x, y):
    """(k, p) of y = k x^p, least squares in log space."""
    p, log_k = np.polyfit(np.log(x), np.log(y), 1)
    return float(math.exp(log_k)), float(p)


def near_optimal(points, key, tolerance):
    """Per compute budget, the geometric mean of `key` over the points whose loss is within
    `tolerance` (relative) of that budget's least (DeepSeek LLM's near-optimal set)."""
    budgets = {}
    for point in points:
        budgets.setdefault(point["budget_flops"], []).append(point)
    found = []
    for budget, group in sorted(budgets.items()):
        least = min(p["val_loss"] for p in group)
        chosen = [p[key] for p in group if p["val_loss"] <= least * (1 + tolerance)]
        found.append((budget, float(math.exp(np.mean(np.log(chosen))))))
    return found
