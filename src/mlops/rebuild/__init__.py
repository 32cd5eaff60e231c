"""Update: rebuild a registered version from its lineage (reproduce), or build the next one
from the same recipe on new or fed-back data (retrain)."""
