"""spacegraph_bench: the benchmarks behind ``spacegraph bench`` and ``spacegraph demo``, with their data loaders.

Each benchmark module returns a JSON-ready record from ``bench(data_dir, out_dir, ...)`` and prints it with
``summary(record)``. The two commands join the ``spacegraph`` command through the ``spacegraph.commands``
entry-point group (see :mod:`spacegraph_bench.cli`). Throughput and one-off scripts live in
``benchmarks/scripts/`` and are not part of the package.
"""
