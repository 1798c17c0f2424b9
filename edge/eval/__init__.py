"""Offline evaluation against ground truth: detector mAP (`eval detector`), tracking and billing with baselines (`eval tracking`)."""
