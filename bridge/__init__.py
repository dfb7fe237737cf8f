"""The bridge core: knows no platform. See DESIGN in README.md."""

__version__ = "0.1.0"
