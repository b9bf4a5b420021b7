# cuda tests.
