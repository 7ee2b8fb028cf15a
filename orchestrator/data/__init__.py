"""Data files shipped with dl: instances.json (the SageMaker instance catalog)."""
