"""TPI Chat engine: models, sharding, TP runtime, comm and cluster. Never imports Qt."""

__version__ = "0.1.0"
