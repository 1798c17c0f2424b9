"""DishTracker Edge: detect, track and bill dishes on moving cafeteria trays."""

__version__ = "0.2.0"
