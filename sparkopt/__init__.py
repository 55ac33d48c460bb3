"""sparkopt: distributed optimizers for linear models on Apache Spark."""
__version__ = "0.1.0"
