"""One module per chapter's experiment: what the chapter trains, measures and summarises.

``ch1_tradeoff`` (discriminability vs transferability over epochs), ``ch2_information`` (the information plane),
``ch3_ctc`` (CTC against the baseline), ``ch4_fusion`` (fusion heads with metadata), ``ch5_transfer`` (the results
tables). They build on the building blocks (``ctcbook.train``, ``ctcbook.probes``, ...) and never on ``ctcbook.book``.
"""
