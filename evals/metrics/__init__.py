"""Evaluation metrics, one family per file (``fid``: FID and KID on InceptionV3 2015-12-05 features)."""
