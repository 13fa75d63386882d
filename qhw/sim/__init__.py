"""Co-simulation of the generated accelerator: cocotb drivers/monitor/checker, simulator builds,
and the ``qhw simulate`` command. The host runtime that maps models onto the array is
``qhw.runtime``; the golden model it is checked against is ``qhw.kernels`` + ``qhw.arith``."""
