"""dl: package PyTorch Lightning training code and run it here or on SageMaker.

Importing this package is cheap on purpose: torch, lightning and boto3 are
imported only inside the functions that need them, so that ``dl --help`` and
``dl runs`` stay instant. The Python API lives in :mod:`orchestrator.api`.
"""

__version__ = "0.1.0"
