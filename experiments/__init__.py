"""Runnable studies: ``python -m experiments.<name>`` or the ``bayesiamp`` console script."""
