"""The machinery that runs the book: chapter execution with papermill (``runner``), the chapters' named profiles
(``profiles``), the provenance box (``provenance``), figures (``plots``), epoch explorers (``explore``), a Sphinx
extension for the HTML build (``sphinx_scripts``) and the ``ctcbook`` command (``cli``)."""
