"""Datasets: built-in ones materialized to files, and a datamodule for any .npz/.csv file."""
