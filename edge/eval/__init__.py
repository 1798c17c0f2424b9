"""Offline evaluation against ground truth.

`eval detector`: detector mAP; `eval tracking`: tracking and billing with baselines.
"""
