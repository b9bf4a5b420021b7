# tok tests.
