"""Maintenance commands that may import heavy libraries; never imported by the simulator."""
