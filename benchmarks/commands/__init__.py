"""The ``lrbench`` commands, one module each: its argument parser beside its handler."""
