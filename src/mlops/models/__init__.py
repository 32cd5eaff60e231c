"""Networks (plain `nn.Module`s, importable without Lightning) and the Lightning classifier."""
