"""Offline evaluation: detector mAP (and later tracking and billing) against ground truth."""
