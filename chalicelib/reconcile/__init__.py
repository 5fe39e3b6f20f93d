"""The reconcile stage: settle pages, decide the verdict and announce it."""
