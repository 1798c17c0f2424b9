"""Trays to bills: checkout line, menu and prices, the journal."""
