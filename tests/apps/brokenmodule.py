"""A handler module that fails while importing, for the config error tests."""

raise RuntimeError("database URL missing at import time")
