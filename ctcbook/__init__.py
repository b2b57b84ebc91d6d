"""ctcbook: a reproducibility book for the discriminability-transferability trade-off (Cui et al., ECCV 2022),
contrastive temporal coding, and Dynamic MLP fusion (Yang et al., CVPR 2022).

Three layers, and the path of a module says which it belongs to (imports go one way, down the list):

- ``ctcbook.book``: runs the book (chapter execution, profiles, provenance, figures, explorers, CLI);
- ``ctcbook.chapters``: one module per chapter's experiment (``ch1_tradeoff`` ... ``ch5_transfer``);
- building blocks, everything else: ``config``, ``data``, ``models``, ``train`` (the engine), ``runs`` (the run
  store), ``losses``, ``ctc_objective``, ``probes``, ``estimators``.

A building block imports no chapter and no book module; a chapter imports no book module
(``tests/test_layout.py`` checks it).
"""

__version__ = "0.1.0"
