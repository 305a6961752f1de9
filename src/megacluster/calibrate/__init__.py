"""``megacluster calibrate``: microbenchmarks on the local device (CUDA GPU or CPU), fits to the step model's
own shapes, hardware profiles in the catalog's format, ``--hardware`` on every command, and refinement of a
profile from a measured training run (``--from-metrics``). Torch is imported only inside the benchmarks."""
