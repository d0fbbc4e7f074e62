"""deepdist on Spark: `Distributor(job, num_executors).run(df)` trains a
deepdist job with one executor per task of a barrier stage."""

from .distributor import Distributor, DistributorError, Summary

__all__ = ["Distributor", "DistributorError", "Summary"]
