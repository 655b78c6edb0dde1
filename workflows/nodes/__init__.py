"""Node handlers, one module per family; every module here is imported by ``load_nodes()``."""
