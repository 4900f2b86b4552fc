"""Options of the whole test suite."""

from tests.devices import add_device_option


def pytest_addoption(parser):
    add_device_option(parser)
