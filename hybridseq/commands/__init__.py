"""The built-in sub-commands of ``hybridseq``, one module per group, registered through the same
``hybridseq_register_commands`` hook as a plugin's. Each module is light to import: a handler imports
what it runs (the trainer, the sweep runner, the analysis) when it is called.
"""
