"""Ansible plugins shipped with the project (found through the repository's ``ansible.cfg``).

- ``inventory/infra_inventory.py``: our inventory folder (``inventories/<name>/``) as an
  Ansible inventory, so that ``ansible-inventory -i inventories/lab --list`` and
  ``ansible -i inventories/lab all -m ping`` see what Nornir and the engine see.
"""
