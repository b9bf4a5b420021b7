# daemon tests.
