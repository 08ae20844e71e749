"""The `diffews` command line."""
