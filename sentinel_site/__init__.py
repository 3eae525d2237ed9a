import os

# numpy's BLAS in one thread, set before anything imports numpy: recall's held vectors
# (memory/held_vectors.py) multiply a matrix by a vector a turn, and OpenBLAS's helper threads spin
# after each call, several milliseconds of CPU for a fraction of one (bench/HISTORY.md row 71).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from sentinel_site.celery import app as celery_app

__all__ = ("celery_app",)
