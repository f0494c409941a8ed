"""Fidelity: how far the simulator is from live mode on the same trace, request by request and phase by phase."""
