"""Options and collection order of the whole test suite."""

import pytest

from tests.devices import add_device_option

COLLECTED_AT = pytest.StashKey[int]()


def pytest_addoption(parser):
    add_device_option(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Each test's place in collection order, before pytest regroups tests by parametrized session fixtures
    (tests/integration/conftest.py restores it within each device)."""
    for index, item in enumerate(items):
        item.stash[COLLECTED_AT] = index
