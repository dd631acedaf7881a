"""The applications on top of the runtime: the ``kwmlp`` command line and its commands, audio
files, the HEAR 2021 API, Triton serving, Ray Data corpora, the checkpoint download.

Nothing below ``kwmlp.models``, ``kwmlp.export`` or ``kwmlp.runtime`` imports from here.
"""
