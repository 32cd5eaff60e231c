"""Scale out: the team stack (`make server`): PostgreSQL, an S3 endpoint and `mlflow server`
in front of both, started and stopped as one, and DVC's remote on the same S3."""
