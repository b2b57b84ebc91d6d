"""ctcbook: a reproducibility book for the discriminability-transferability trade-off (Cui et al., ECCV 2022),
contrastive temporal coding, and Dynamic MLP fusion (Yang et al., CVPR 2022).

``ctcbook.book`` runs the book, ``ctcbook.chapters`` holds one module per chapter's experiment, and everything else
is a building block; imports only go down that list (the README's Architecture section; ``tests/test_layout.py``).
"""

__version__ = "0.1.0"
