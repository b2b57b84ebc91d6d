"""Matrix-based Renyi I(X;T) from the library's primitives: the known-answer tests' reference composition."""
from __future__ import annotations

from torch import Tensor

from ctcbook.estimators import gaussian_gram, kernel_width, label_gram, renyi_entropy


def renyi_joint_entropy(*grams: Tensor, alpha: float = 1.01) -> float:
    """Joint matrix-based Renyi entropy in bits: :func:`renyi_entropy` of the Hadamard product of the Gram matrices."""
    if not grams:
        raise ValueError("renyi_joint_entropy needs at least one Gram matrix")
    shape = grams[0].shape
    prod = grams[0].double()
    for g in grams[1:]:
        if g.shape != shape:
            raise ValueError(f"all Gram matrices must have the same shape, got {tuple(shape)} and {tuple(g.shape)}")
        prod = prod * g.double().to(prod.device)
    return renyi_entropy(prod, alpha)


def renyi_mutual_information(x: Tensor, t: Tensor, *, alpha: float = 1.01, sigma_x: float | None = None,
                             sigma_t: float | None = None, t_is_labels: bool = False) -> float:
    """I(X;T) = S(X) + S(T) - S(X,T) in bits; ``t`` may be integer labels (delta kernel)."""
    kx = gaussian_gram(x, sigma_x if sigma_x is not None else kernel_width(x))
    if len(t) != len(x):
        raise ValueError(f"x and t must hold the same number of points, got {len(x)} and {len(t)}")
    if t_is_labels:
        kt = label_gram(t).to(kx.device)
    else:
        kt = gaussian_gram(t, sigma_t if sigma_t is not None else kernel_width(t)).to(kx.device)
    return renyi_entropy(kx, alpha) + renyi_entropy(kt, alpha) - renyi_joint_entropy(kx, kt, alpha=alpha)
