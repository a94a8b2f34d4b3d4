"""fikitd: the FIKIT control plane (MPS, client registration, jobs, measurements)."""

__version__ = "0.1.0"
