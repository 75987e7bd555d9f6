"""The `keras-edge` command: app (error policy), one module per command group, views."""
