"""TPI Chat engine: models, sharding, tensor-parallel runtime, comm and cluster. Never imports Qt."""

__version__ = "0.1.0"
