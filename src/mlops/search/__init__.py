"""Hyperparameter search: Optuna studies driven through Hydra (`hparams_search=...`), in one
process or shared by sweep workers on many machines through a database."""
