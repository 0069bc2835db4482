"""Preset TOML files shipped with sequnet (one per dataset or task)."""
