"""Developer tooling: the demo, the benchmarks and the process supervision they share.

``offload demo`` (:mod:`.demo`, :mod:`.demo_contracts`) and ``offload bench``
(:mod:`.bench`) start edge servers and gateways as real processes on loopback
(:mod:`.processes`, :mod:`.ports`) and drive load through them. This is tooling
the CLI reaches, lazily, when one of those commands runs; the runtime (the
gateway, its engine, plugins' hooks) never imports it, and
``tests/core/test_devtools_boundary.py`` keeps it that way.
"""
