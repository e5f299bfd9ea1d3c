"""YAML recipes in LightningCLI form, shipped as package data (read with importlib.resources)."""
