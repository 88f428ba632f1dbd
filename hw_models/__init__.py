"""Hardware target descriptions, shipped as package data."""
