"""ctcbook: a reproducibility book for the discriminability-transferability trade-off (Cui et al., ECCV 2022),
contrastive temporal coding, and Dynamic MLP fusion (Yang et al., CVPR 2022)."""

__version__ = "0.1.0"
