"""Ansible inventory plugins of the project (a plugin folder: ``inventory_plugins``)."""
