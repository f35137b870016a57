"""lvmbench: evaluate medical-imaging vision encoders on the LVM-Med downstream suite."""

__version__ = "0.1.0"
