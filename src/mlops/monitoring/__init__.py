"""Monitoring a served version: the reference its live traffic is compared with."""
