"""Helpers for multi-process (DDP) training that Lightning's strategies leave to the user."""
