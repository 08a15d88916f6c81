"""``python -m infra_automation.cli`` is the ``infra`` command."""

from infra_automation.cli import main

main()
