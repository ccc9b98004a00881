"""cityedge: the edge agent for smart-city gateways."""

__version__ = "0.1.0"
