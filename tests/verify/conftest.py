"""The lab fixture of the integration tests (``INFRA_LAB_NAME`` picks the instance)."""

from tests.integration.conftest import (  # noqa: F401 - fixtures and hooks used by pytest
    lab,
    pytest_collection_modifyitems,
    pytest_runtest_makereport,
)
